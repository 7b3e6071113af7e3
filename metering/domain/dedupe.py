"""Idempotency memory: which usage event ids an account has already processed.

The engine talks to an :class:`IdMemory`. :class:`DedupeWindow` is the in-process one, kept
inside the account's state (the pure engine, tests, benchmarks); the processor gives each state
a view of its own id store instead (``pipeline/id_store.py``), so the state blob stays small.

Ids are stored as 8-byte BLAKE2b hashes (a false "duplicate" needs a 64-bit collision inside
one account's window). Three flat ``array`` buffers, no per-id Python objects:

* ``keys``/``times``: a FIFO of (hash, remembered-at) in arrival order, for eviction;
* ``table``: an open-addressing (linear probing) hash set over the same hashes, for O(1) lookup.

That is 16 bytes per id in the FIFO plus 16-32 bytes in the table (load factor 1/4..1/2) in
memory, and 16 bytes per id serialized.

Ids leave the window when they are older than ``window_ms`` (account event time) or, only when
a cap is set, when the count cap is hit. ``watermark`` is the newest remembered-at time ever
evicted: an event that occurred at or before it might have been forgotten, so the engine refuses
to charge it (invariant 2, "debits at most once", wins over charging a very late event). Without
a cap nothing is forgotten inside the window, and the engine's own rule (an event older than
the window is never charged) is the only one.
"""

from __future__ import annotations

import sys
from array import array
from hashlib import blake2b
from typing import Protocol

_NEVER = -(2**63)
_MIN_TABLE = 8


def id_hash(value: str) -> int:
    """Stable (process-independent) non-zero 64-bit hash of an id."""
    h = int.from_bytes(blake2b(value.encode(), digest_size=8).digest(), "little")
    return h or 1


class IdMemory(Protocol):
    """What the engine needs of an account's remembered usage event ids."""

    watermark: int
    """The newest remembered-at time of an id forgotten before the window let it go (a count
    cap): events at or before it are never charged. ``-2**63`` when nothing was."""

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` was remembered and not forgotten since."""
        ...

    def remember(self, event_id: str, at: int) -> None:
        """Remember ``event_id`` (not yet seen) at account time ``at``."""
        ...

    def expire(self, horizon: int) -> None:
        """Ids remembered before ``horizon`` may be forgotten from now on."""
        ...


class DedupeWindow:
    """Remembered ids of one account. Mutated in place by the engine."""

    __slots__ = (
        "_count",
        "_head",
        "_keys",
        "_mask",
        "_table",
        "_times",
        "max_ids",
        "watermark",
        "window_ms",
    )

    def __init__(self, window_ms: int, max_ids: int | None) -> None:
        self.window_ms = window_ms
        self.max_ids = max_ids
        self.watermark = _NEVER
        self._keys = array("Q")
        self._times = array("q")
        self._head = 0
        self._count = 0
        self._table = array("Q", bytes(8 * _MIN_TABLE))
        self._mask = _MIN_TABLE - 1

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: int) -> bool:
        table = self._table
        mask = self._mask
        i = key & mask
        while True:
            found = table[i]
            if found == key:
                return True
            if found == 0:
                return False
            i = (i + 1) & mask

    def seen(self, event_id: str) -> bool:
        return id_hash(event_id) in self

    def remember(self, event_id: str, at: int) -> None:
        self.add(id_hash(event_id), at)

    def expire(self, horizon: int) -> None:
        """Nothing to do: :meth:`add` evicts what the window let go."""

    def add(self, key: int, at: int) -> None:
        """Remember ``key`` (not yet present) at account time ``at``, then evict what expired."""
        self._keys.append(key)
        self._times.append(at)
        count = self._count = self._count + 1
        mask = self._mask
        if count << 1 > mask:
            self._rebuild(mask + 1 << 1)
        else:
            table = self._table
            i = key & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = key
        cap = self.max_ids
        if (cap is not None and count > cap) or self._times[self._head] < at - self.window_ms:
            self._evict(at - self.window_ms)

    def _evict(self, horizon: int) -> None:
        keys = self._keys
        times = self._times
        head = self._head
        last = len(times) - 1
        cap = self._count if self.max_ids is None else self.max_ids
        while self._count > cap or (head < last and times[head] < horizon):
            if times[head] > self.watermark:
                self.watermark = times[head]
            self._delete(keys[head])
            head += 1
            self._count -= 1
        self._head = head
        if head > 1024 and head << 1 > len(keys):
            del keys[:head]
            del times[:head]
            self._head = 0

    def _insert(self, key: int) -> None:
        table = self._table
        mask = self._mask
        i = key & mask
        while table[i]:
            i = (i + 1) & mask
        table[i] = key

    def _delete(self, key: int) -> None:
        """Remove ``key`` with backward-shift deletion (no tombstones)."""
        table = self._table
        mask = self._mask
        i = key & mask
        while table[i] != key:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            moved = table[j]
            if moved == 0:
                break
            home = moved & mask
            # ``moved`` may fill the hole at i only if its home is not cyclically in (i, j].
            if (i < home <= j) if i <= j else (home > i or home <= j):
                continue
            table[i] = moved
            i = j
        table[i] = 0

    def _rebuild(self, size: int) -> None:
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        for key in self._keys[self._head :]:
            self._insert(key)

    # -- size and persistence ------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Bytes held by the three buffers (their allocated capacity)."""
        return sys.getsizeof(self._keys) + sys.getsizeof(self._times) + sys.getsizeof(self._table)

    def to_bytes(self) -> bytes:
        """``watermark`` + live (hash, time) pairs, little-endian: 8 + 16 bytes per id."""
        keys = self._keys[self._head :]
        times = self._times[self._head :]
        if sys.byteorder != "little":
            keys.byteswap()
            times.byteswap()
        head = array("q", [self.watermark, len(keys)])
        if sys.byteorder != "little":
            head.byteswap()
        return head.tobytes() + keys.tobytes() + times.tobytes()

    @classmethod
    def from_bytes(
        cls, data: bytes | memoryview, window_ms: int, max_ids: int | None
    ) -> DedupeWindow:
        head = array("q")
        head.frombytes(data[:16])
        if sys.byteorder != "little":
            head.byteswap()
        watermark, count = head
        window = cls(window_ms, max_ids)
        window.watermark = watermark
        window._keys.frombytes(data[16 : 16 + 8 * count])
        window._times.frombytes(data[16 + 8 * count : 16 + 16 * count])
        window._count = count
        if sys.byteorder != "little":
            window._keys.byteswap()
            window._times.byteswap()
        size = _MIN_TABLE
        while size <= count << 1:
            size <<= 1
        window._rebuild(size)
        return window
