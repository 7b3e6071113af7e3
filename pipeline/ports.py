"""The narrow seam between the faust adapter and the pure credit engine.

The processor only needs a few operations from the engine; naming them here keeps the Kafka
machinery testable with a trivial stand-in and keeps ``metering.domain`` free of I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


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
    ) -> tuple[bytes, list[tuple[str, int]]]:
        """The account's state rebuilt from ``snapshot`` (None: a new state) and its ledger
        ``entries`` (records, ``seq`` order), and the usage event ids to remember again as
        (event id, remembered-at). Raises ``ValueError`` when the ledger cannot be folded."""
        ...

    def apply_usage(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step: ...

    def apply_command(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step: ...

    def sweep(self, state: Any, now: int) -> Step: ...

    @property
    def version(self) -> str:
        """Identifies the loaded price book/plans (for logs and metrics)."""
        ...
