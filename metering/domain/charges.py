"""Charge memory: what each recent usage event was charged, so it can be voided or amended.

The engine talks to a :class:`ChargeMemory`. :class:`ChargeWindow` is the in-process one, kept
in the account's state (the pure engine, tests) and serialized with it. It forgets a charge when
the event's id leaves the idempotency window: a correction is possible for exactly as long as a
re-send is recognised. The processor attaches :data:`NO_CHARGES` until its charge store exists
(docs/corrections.md), so its states do not grow with traffic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from metering.domain.records import Allocation
from metering.domain.reversal import Charge


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    """A remembered charge, with what an amend needs to price the event again."""

    charge: Charge
    period_end: int
    feature: str
    subject: str | None
    model: str | None
    remembered_at: int
    """Account time when it was charged (eviction follows the id's)."""
    voided: bool = False

    def to_json(self) -> list[Any]:
        c = self.charge
        allocations = [[g, a] for g, a in c.allocations]
        return [
            c.event_id, c.occurred_at, c.period_start, allocations, c.overage, self.period_end,
            self.feature, self.subject, self.model, self.remembered_at, self.voided,
        ]  # fmt: skip

    @classmethod
    def from_json(cls, raw: list[Any]) -> ChargeRecord:
        event_id, at, start, allocations, overage, end, feature, subject, model, when, voided = raw
        charge = Charge(
            event_id, at, start, tuple(Allocation(g, a) for g, a in allocations), overage
        )
        return cls(charge, end, feature, subject, model, when, voided)


class ChargeMemory(Protocol):
    """What the engine needs of an account's remembered charges."""

    def get(self, event_id: str) -> ChargeRecord | None:
        """The charge of ``event_id`` (``voided`` set once voided), or None."""
        ...

    def put(self, record: ChargeRecord) -> None:
        """Remember the charge of an event just charged (its id was just remembered)."""
        ...

    def void(self, event_id: str, at: int) -> None:
        """Mark the charge of ``event_id`` voided, at account time ``at``."""
        ...

    def expire(self, horizon: int) -> None:
        """Charges remembered before ``horizon`` may be forgotten from now on."""
        ...


def encode_charge(record: ChargeRecord) -> bytes:
    """A charge as bytes, for a store outside the state."""
    return json.dumps(record.to_json(), separators=(",", ":")).encode()


def decode_charge(data: bytes) -> ChargeRecord:
    return ChargeRecord.from_json(json.loads(data))


class ChargeWindow:
    """Charges by event id, in the order they were made (so expiry pops from the front)."""

    def __init__(self) -> None:
        self._records: dict[str, ChargeRecord] = {}

    def get(self, event_id: str) -> ChargeRecord | None:
        return self._records.get(event_id)

    def put(self, record: ChargeRecord) -> None:
        self._records[record.charge.event_id] = record

    def void(self, event_id: str, at: int) -> None:
        record = self._records.get(event_id)
        if record is not None:
            self._records[event_id] = replace(record, voided=True)

    def records(self) -> list[ChargeRecord]:
        return list(self._records.values())

    def expire(self, horizon: int) -> None:
        records = self._records
        while records:
            first = next(iter(records))
            if records[first].remembered_at >= horizon:
                return
            del records[first]

    def __len__(self) -> int:
        return len(self._records)

    def to_json(self) -> list[list[Any]]:
        return [r.to_json() for r in self._records.values()]

    @classmethod
    def from_json(cls, raw: list[list[Any]]) -> ChargeWindow:
        window = cls()
        for item in raw:
            window.put(ChargeRecord.from_json(item))
        return window


class _NoCharges:
    """Remembers nothing: corrections answer ``unknown_event``."""

    def get(self, event_id: str) -> ChargeRecord | None:
        return None

    def put(self, record: ChargeRecord) -> None:
        return None

    def void(self, event_id: str, at: int) -> None:
        return None

    def expire(self, horizon: int) -> None:
        return None


NO_CHARGES: ChargeMemory = _NoCharges()
