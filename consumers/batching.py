"""Deterministic batches for the exactly-once ClickHouse sink (pure; no I/O).

A batch is the records of ONE (topic, partition) between two offsets. Its
``insert_deduplication_token`` is derived from that range, so inserting the same range twice
is a no-op in ClickHouse (and, with ``deduplicate_blocks_in_dependent_materialized_views``,
in the rollups too).

Where a batch ends is decided by size and time, which a replay would not reproduce. So the
sink records each batch's range BEFORE inserting it, in Kafka itself: it commits the batch's
first offset with commit metadata ``eo1:<first>:<last>`` (the *intent*), inserts, then commits
``last + 1`` with empty metadata. After a crash, or on a new owner after a rebalance, the
committed metadata says which range was in flight; :class:`BatchAccumulator` then closes that
partition's first batch exactly at ``last`` - the same records, the same token, deduplicated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TopicPartitionKey = tuple[str, int]

_INTENT = re.compile(r"^eo1:(\d+):(\d+)$")


def intent_metadata(first: int, last: int) -> str:
    return f"eo1:{first}:{last}"


def parse_intent(metadata: str | None) -> tuple[int, int] | None:
    """``(first, last)`` of an in-flight batch recorded in commit metadata, else None."""
    match = _INTENT.match(metadata or "")
    return (int(match[1]), int(match[2])) if match else None


def dedup_token(topic: str, partition: int, first: int, last: int) -> str:
    return f"{topic}/{partition}/{first}-{last}"


@dataclass(slots=True)
class DeadRecord:
    """A record that could not become a row; it goes to the DLQ, its offset stays in the range."""

    offset: int
    error: BaseException


@dataclass(slots=True)
class Batch:
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: list[Any] = field(default_factory=list)
    dead: list[DeadRecord] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    """The offset of each row (parallel to ``rows``; dead records are not in it)."""

    @property
    def token(self) -> str:
        return dedup_token(self.topic, self.partition, self.first_offset, self.last_offset)

    @property
    def intent(self) -> str:
        return intent_metadata(self.first_offset, self.last_offset)

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1


@dataclass(slots=True)
class _Open:
    first: int
    last: int
    rows: list[Any] = field(default_factory=list)
    dead: list[DeadRecord] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)


class BatchAccumulator:
    """Collects rows per partition and cuts batches by size/time, honouring replay intents."""

    def __init__(
        self,
        max_rows: int = 50_000,
        max_wait_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._open: dict[TopicPartitionKey, _Open] = {}
        self._replay_until: dict[TopicPartitionKey, int] = {}
        self._ready: list[Batch] = []
        self._rows = 0
        self._oldest: float | None = None

    def set_replay(self, tp: TopicPartitionKey, first: int, last: int) -> None:
        """The committed intent says ``[first, last]`` of ``tp`` was in flight: re-form it."""
        del first  # the replay restarts at the committed offset, which is ``first``
        self._replay_until[tp] = last

    def replaying(self, tp: TopicPartitionKey) -> bool:
        return tp in self._replay_until

    def add(self, tp: TopicPartitionKey, offset: int, row: Any) -> None:
        """One record: a row (any object but a :class:`DeadRecord`) or a dead record."""
        until = self._replay_until.get(tp)
        if until is not None and offset > until:
            # The record at ``until`` vanished (retention); close what we have.
            self._seal(tp)
            del self._replay_until[tp]
        buf = self._open.get(tp)
        if buf is None:
            buf = self._open[tp] = _Open(first=offset, last=offset)
            if self._oldest is None:
                self._oldest = self._clock()
        buf.last = offset
        if isinstance(row, DeadRecord):
            buf.dead.append(row)
        else:
            buf.rows.append(row)
            buf.offsets.append(offset)
            self._rows += 1
        if until is not None and offset == until:
            self._seal(tp)
            del self._replay_until[tp]

    def extend(self, tp: TopicPartitionKey, offsets: list[int], rows: list[Any]) -> None:
        """A run of rows of one partition in offset order (the sink's hot path).

        Same result as :meth:`add` per row, without per-row Python work. The lists are
        adopted when the partition has no open buffer, so the caller must not reuse them.
        """
        if not offsets:
            return
        if tp in self._replay_until:
            for offset, row in zip(offsets, rows, strict=True):
                self.add(tp, offset, row)
            return
        buf = self._open.get(tp)
        if buf is None:
            self._open[tp] = _Open(offsets[0], offsets[-1], rows, [], offsets)
            if self._oldest is None:
                self._oldest = self._clock()
        else:
            buf.last = offsets[-1]
            buf.rows.extend(rows)
            buf.offsets.extend(offsets)
        self._rows += len(offsets)

    def _seal(self, tp: TopicPartitionKey) -> None:
        buf = self._open.pop(tp, None)
        if buf is not None:
            self._ready.append(
                Batch(tp[0], tp[1], buf.first, buf.last, buf.rows, buf.dead, buf.offsets)
            )

    @property
    def rows(self) -> int:
        """Rows buffered in open (not yet cut) batches."""
        return self._rows

    def due(self) -> bool:
        if self._ready:
            return True
        if self._rows >= self.max_rows:
            return True
        return self._oldest is not None and self._clock() - self._oldest >= self.max_wait_s

    def cut(self) -> list[Batch]:
        """Every batch that may be flushed now; a partition still replaying keeps its buffer."""
        for tp in list(self._open):
            if tp not in self._replay_until:
                self._seal(tp)
        batches, self._ready = self._ready, []
        self._rows = sum(len(b.rows) for b in self._open.values())
        self._oldest = self._clock() if self._open else None
        return batches

    def drop(self, tps: list[TopicPartitionKey]) -> None:
        """Forget revoked partitions: their uncommitted records go to the next owner."""
        for tp in tps:
            self._open.pop(tp, None)
            self._replay_until.pop(tp, None)
        self._ready = [b for b in self._ready if (b.topic, b.partition) not in tps]
        self._rows = sum(len(b.rows) for b in self._open.values())
        if not self._open:
            self._oldest = None

    @property
    def empty(self) -> bool:
        return not self._open and not self._ready and not self._replay_until
