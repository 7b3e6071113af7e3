"""The accepted events between the two passes: encoded once, kept on disk, not in memory.

The first pass validates and encodes each event as the SDK does; the second only has to send
bytes. A temporary file (deleted when closed) holds ``(key, value)`` records, each length
prefixed, so a file of any size needs only a batch of memory.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from typing import IO

_LENGTHS = struct.Struct("<HI")  # key length, value length


class Spill:
    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.count = 0

    def add(self, key: bytes, value: bytes) -> None:
        self._file.write(_LENGTHS.pack(len(key), len(value)) + key + value)
        self.count += 1

    def batches(self, size: int) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """The records in the order they were added, ``size`` at a time."""
        f = self._file
        f.flush()
        f.seek(0)
        read, unpack, head = f.read, _LENGTHS.unpack, _LENGTHS.size
        keys: list[bytes] = []
        values: list[bytes] = []
        for _ in range(self.count):
            key_len, value_len = unpack(read(head))
            keys.append(read(key_len))
            values.append(read(value_len))
            if len(values) == size:
                yield keys, values
                keys, values = [], []
        if values:
            yield keys, values

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
