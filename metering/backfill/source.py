"""Reading a backfill file: JSON Lines or an Avro object container, record by record.

Each record comes with its position (a line, or a record number) and either the event as a
dict or why it could not be read, so a bad line is refused with its reason instead of stopping
the load. A line longer than :data:`MAX_LINE_BYTES` is refused without being parsed, so no input
holds unbounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from fastavro import reader as avro_reader

from metering.domain.errors import ValidationError
from metering.domain.periods import parse_instant

MAX_LINE_BYTES = 64 * 1024
AVRO_MAGIC = b"Obj\x01"


class SourceRecord(NamedTuple):
    position: int
    """1-based line (JSON Lines) or record number (Avro)."""
    event: dict[str, Any] | None
    problem: str | None
    """Why the record could not be read (``event`` is then None)."""
    raw: str
    """The record as read, for the refusals file (cut to 1,000 characters; left empty for a
    JSON line that reads well: the refusals file then has it from ``event``)."""


def is_avro(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == AVRO_MAGIC


def read_records(path: Path) -> Iterator[SourceRecord]:
    """Every record of ``path`` (an Avro container if it starts with Avro's magic bytes)."""
    if is_avro(path):
        yield from _avro(path)
    else:
        yield from _json_lines(path)


def _raw(text: bytes) -> str:
    return text[:1000].decode("utf-8", "replace")


def _json_lines(path: Path) -> Iterator[SourceRecord]:
    decode = msgspec.json.decode
    with path.open("rb") as f:
        position = 0
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            position += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # skip the rest of the long line
                    line = f.readline(MAX_LINE_BYTES + 1)
                yield SourceRecord(position, None, f"line longer than {MAX_LINE_BYTES} bytes", "")
                continue
            text = line.strip()
            if not text:
                continue
            try:
                value = decode(text)
            except msgspec.DecodeError as exc:
                yield SourceRecord(position, None, f"not JSON: {exc}", _raw(text))
                continue
            if type(value) is not dict:
                yield SourceRecord(position, None, "not a JSON object", _raw(text))
                continue
            occurred = value.get("occurred_at")
            if type(occurred) is int:  # the common case, without the raw text
                yield SourceRecord(position, value, None, "")
            else:
                yield _with_time(position, value, _raw(text))


def _avro(path: Path) -> Iterator[SourceRecord]:
    with path.open("rb") as f:
        try:
            records = avro_reader(f)
            for position, value in enumerate(records, 1):
                if not isinstance(value, dict):
                    yield SourceRecord(position, None, "not an Avro record", repr(value)[:1000])
                    continue
                yield _with_time(position, value, repr(value)[:1000])
        except Exception as exc:  # fastavro raises many kinds for a corrupt container
            yield SourceRecord(-1, None, f"unreadable Avro container: {exc}", "")


def _with_time(position: int, value: dict[str, Any], raw: str) -> SourceRecord:
    """``occurred_at`` may be written as an ISO-8601 time in a file (or come back from Avro's
    timestamp-millis as a ``datetime``); events carry epoch ms."""
    occurred = value.get("occurred_at")
    if isinstance(occurred, (str, datetime)):
        try:
            value["occurred_at"] = parse_instant(occurred, what="occurred_at")
        except ValidationError as exc:
            return SourceRecord(position, None, str(exc), raw)
    return SourceRecord(position, value, None, raw)
