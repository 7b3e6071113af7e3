"""The processor's seams: the engine it drives, and the stream runtime it runs on.

The processor needs a few operations from the engine (``EnginePort``); naming them keeps the
Kafka machinery testable with a trivial stand-in and ``metering.domain`` free of I/O. The
exactly-once protocol needs a few from the stream runtime (``StreamRuntime``, ``StateTable``),
which ``pipeline/runtime`` implements on faust; the protocol's unit tests use fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from aiokafka.structs import TopicPartition


class InputError(Exception):
    """The input record is unusable (cannot be validated or priced): route it to the DLQ.

    ``error_class`` names the underlying cause (e.g. the engine's typed error) for the
    DLQ header, so operators see ``unknown_feature`` rather than a generic wrapper.
    ``alerts`` (CreditAlert records) are published with the DLQ record, in its transaction
    (e.g. ``UNKNOWN_FEATURE``: usage that can never be charged).
    """

    def __init__(
        self, error_class: str, message: str, alerts: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.alerts = alerts


@dataclass(slots=True)
class Step:
    """What applying one input (or a sweep) did: the new state and the records to emit."""

    state: Any
    entries: list[Mapping[str, Any]] = field(default_factory=list)
    alerts: list[Mapping[str, Any]] = field(default_factory=list)


class ToRemember(NamedTuple):
    """An id the id store must remember again after an account is rebuilt from the ledger."""

    event_id: str
    at: int
    """Remembered-at account time."""
    charge: bytes | None = None
    """What the event was charged, kept with its id (``void_usage`` reads it)."""
    void: bool = False
    """The id is the event's void marker, not the event's own."""
    amended: bool = False
    """``charge`` is the event's amended charge: the store keeps it as a new version unless
    that is already the charge it holds."""
    correction: bool = False
    """The id is a correction command's (``event_id`` holds the command id): its marker."""


class EnginePort(Protocol):
    """Operations the processor needs; states are opaque to it except through (de)serialising."""

    def new_state(self, account_id: str) -> Any: ...

    def load_state(self, data: bytes) -> Any: ...

    def dump_state(self, state: Any) -> bytes: ...

    def attach_ids(self, state: Any, ids: Any) -> None:
        """Make ``state`` remember usage event ids in ``ids`` (an id store's view of it)."""
        ...

    def state_seq(self, data: bytes) -> int:
        """The ``seq`` of a dumped state (the restore check compares it with the ledger)."""
        ...

    def catch_up(
        self, account_id: str, snapshot: bytes | None, entries: Sequence[Mapping[str, Any]]
    ) -> tuple[bytes, list[ToRemember]]:
        """The account's state rebuilt from ``snapshot`` (None: a new state) and its ledger
        ``entries`` (records, ``seq`` order), and what the id store must remember again.
        Raises ``ValueError`` when the ledger cannot be folded."""
        ...

    def apply_usage(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step: ...

    def apply_command(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step: ...

    def sweep(self, state: Any, now: int) -> Step: ...

    @property
    def version(self) -> str:
        """Identifies the loaded price book/plans (for logs and metrics)."""
        ...


class StateTable(Protocol):
    """A per-partition RocksDB table with its changelog topic (the runtime's state store)."""

    @property
    def changelog(self) -> str:
        """The changelog topic's name."""
        ...

    def db(self, partition: int) -> Any:
        """The partition's local RocksDB (a ``rocksdict.Rdict`` in raw mode)."""
        ...

    def accounts(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """The partition's (key, value) records, without the runtime's own bookkeeping keys."""
        ...

    def persisted_offset(self, partition: int) -> int | None:
        """The offset of the last changelog record the local DB holds, if known."""
        ...

    def set_persisted_offset(self, partition: int, offset: int) -> None: ...


class StreamRuntime(Protocol):
    """What the exactly-once protocol (``pipeline.sink``) needs from the stream runtime: faust,
    behind ``pipeline/runtime``. Producers are aiokafka transactional producers (or fakes):
    ``create_batch``, ``send_batch``, ``send``, ``send_offsets_to_transaction``,
    ``commit_transaction``, ``begin_transaction``."""

    @property
    def group_id(self) -> str:
        """The consumer group whose offsets the transactions commit."""
        ...

    def transaction(self, partition: int) -> tuple[asyncio.Lock, Any]:
        """The lock and the transactional producer of source ``partition``; ``KeyError`` when
        this worker has none for it (not assigned, or being replaced)."""
        ...

    def committed_offset(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` as this worker knows it."""
        ...

    def mark_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record offsets a transaction has just committed."""
        ...

    @property
    def generation(self) -> int:
        """The consumer group generation (changes with every rebalance)."""
        ...

    @property
    def flowing(self) -> bool:
        """False while a rebalance holds the consumer's flow."""
        ...

    @property
    def rebalancing(self) -> bool: ...

    @property
    def recovering(self) -> bool:
        """True while tables are being restored from their changelogs."""
        ...

    def assignment(self) -> set[TopicPartition]: ...

    def active_partitions(self) -> list[int]:
        """Source partitions this worker owns as active (sorted)."""
        ...

    async def seek(self, tp: TopicPartition, offset: int) -> bool:
        """Move the consumer of ``tp`` to ``offset``; False when ``tp`` was revoked meanwhile."""
        ...

    async def crash(self, error: BaseException) -> None:
        """Stop the worker because of ``error``."""
        ...
