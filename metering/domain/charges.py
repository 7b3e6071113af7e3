"""Charge memory: what each recent usage event was charged, so it can be voided or amended.

The engine talks to a :class:`ChargeMemory`. :class:`ChargeWindow` is the in-process one, kept
in the account's state (the pure engine with ``EngineConfig.charge_window``, tests) and
serialized with it. The processor keeps charges in its id store instead
(``pipeline/id_store.py``), so its states do not grow with traffic. Either forgets a charge when
the event's id leaves the idempotency window: a correction is possible for exactly as long as a
re-send is recognised. Both store a charge as :func:`pack_charge` bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from metering.domain.records import Allocation
from metering.domain.reversal import Charge


class ChargeParts(NamedTuple):
    """A charge as the usage path has it: built with ``tuple.__new__``, nothing else."""

    event_id: str
    occurred_at: int
    period_start: int
    period_end: int
    allocations: Sequence[Allocation]
    overage: int
    feature: str
    subject: str | None
    model: str | None
    at: int
    """Account time when it was charged."""


class ChargeRecord(NamedTuple):
    """A remembered charge, with what an amend needs to price the event again (a tuple, as
    :class:`~metering.domain.reversal.Charge`)."""

    charge: Charge
    period_end: int
    feature: str
    subject: str | None
    model: str | None
    remembered_at: int
    """Account time when it was charged (eviction follows the id's)."""
    voided: bool = False


class ChargeMemory(Protocol):
    """What the engine needs of an account's remembered charges."""

    def get(self, event_id: str) -> ChargeRecord | None:
        """The charge of ``event_id`` (``voided`` set once voided), or None."""
        ...

    def put(self, record: ChargeRecord) -> None:
        """Remember the charge of an event just charged (its id was just remembered)."""
        ...

    def charged(self, parts: ChargeParts) -> None:
        """:meth:`put` from its parts: the usage hot path, which a store may serve without
        building the record."""
        ...

    def void(self, event_id: str, at: int) -> None:
        """Mark the charge of ``event_id`` voided, at account time ``at``."""
        ...

    def expire(self, horizon: int) -> None:
        """Charges remembered before ``horizon`` may be forgotten from now on."""
        ...

    def corrected(self, command_id: str) -> bool:
        """True when a correction command with this id was applied (or refused): a re-sent
        correction is a duplicate."""
        ...

    def remember_correction(self, command_id: str, at: int) -> None:
        """Remember a correction's command id (at account time ``at``) for as long as the
        ledger is kept, outside the account state: corrections come at a share of the usage
        rate, and the state is rewritten with every batch."""
        ...


_HEAD = struct.Struct("<BqqqqqH")  # voided, occurred, period start/end, overage, at, draws
_DRAW = struct.Struct("<qH")  # amount, grant id length
_HEAD_UNPACK = _HEAD.unpack_from
_DRAW_UNPACK = _DRAW.unpack_from
_new = tuple.__new__  # skips NamedTuple's Python-level __new__ (decoding is on the hot path)
_NONE = 0xFFFF


def _text(value: str | None) -> bytes:
    if value is None:
        return _NONE.to_bytes(2, "little")
    raw = value.encode()
    return len(raw).to_bytes(2, "little") + raw


def encode_charge(record: ChargeRecord) -> bytes:
    """A charge as compact bytes, for a store outside the state."""
    c = record.charge
    parts = ChargeParts(
        c.event_id, c.occurred_at, c.period_start, record.period_end, c.allocations, c.overage,
        record.feature, record.subject, record.model, record.remembered_at,
    )  # fmt: skip
    return pack_charge(parts, record.voided)


def pack_charge(p: ChargeParts, voided: bool = False) -> bytes:
    """:func:`encode_charge` from the parts (the processor writes one per charged event, so
    this is on the hot path: no JSON, no record object). The event id is not in the bytes."""
    allocations = p.allocations
    out = [
        _HEAD.pack(
            1 if voided else 0, p.occurred_at, p.period_start, p.period_end, p.overage, p.at,
            len(allocations),
        )
    ]  # fmt: skip
    for grant_id, amount in allocations:
        raw = grant_id.encode()
        out += (_DRAW.pack(amount, len(raw)), raw)
    out += (_text(p.feature), _text(p.subject), _text(p.model))
    return b"".join(out)


def decode_charge(data: bytes, event_id: str, voided: bool = False) -> ChargeRecord:
    """Inverse of :func:`encode_charge` (the event id is the store's key, not in the bytes);
    ``voided`` marks it voided whatever the bytes say (a store that keeps voids apart)."""
    void_byte, occurred, start, end, overage, at, draws = _HEAD_UNPACK(data)
    i = _HEAD.size
    allocations = []
    for _ in range(draws):
        amount, size = _DRAW_UNPACK(data, i)
        i += _DRAW.size
        allocations.append(_new(Allocation, (data[i : i + size].decode(), amount)))
        i += size
    texts: list[str | None] = []
    for _ in range(3):
        size = data[i] | data[i + 1] << 8
        i += 2
        if size == _NONE:
            texts.append(None)
        else:
            texts.append(data[i : i + size].decode())
            i += size
    charge = _new(Charge, (event_id, occurred, start, tuple(allocations), overage))
    feature, subject, model = texts
    return _new(
        ChargeRecord,
        (charge, end, feature or "", subject, model, at, voided or bool(void_byte)),
    )


class ChargeWindow:
    """Charges by event id, in the order they were made (so expiry pops from the front)."""

    def __init__(self) -> None:
        self._records: dict[str, ChargeRecord] = {}
        self.commands: set[str] = set()
        """Correction command ids (kept for good, as ``AccountState.commands``)."""

    def get(self, event_id: str) -> ChargeRecord | None:
        return self._records.get(event_id)

    def put(self, record: ChargeRecord) -> None:
        self._records[record.charge.event_id] = record

    def charged(self, parts: ChargeParts) -> None:
        p = parts
        charge = Charge(p.event_id, p.occurred_at, p.period_start, tuple(p.allocations), p.overage)
        self.put(ChargeRecord(charge, p.period_end, p.feature, p.subject, p.model, p.at))

    def void(self, event_id: str, at: int) -> None:
        record = self._records.get(event_id)
        if record is not None:
            self._records[event_id] = record._replace(voided=True)

    def expire(self, horizon: int) -> None:
        records = self._records
        while records:
            first = next(iter(records))
            if records[first].remembered_at >= horizon:
                return
            del records[first]

    def corrected(self, command_id: str) -> bool:
        return command_id in self.commands

    def remember_correction(self, command_id: str, at: int) -> None:
        self.commands.add(command_id)

    def __len__(self) -> int:
        return len(self._records)

    def to_json(self) -> list[list[str]]:
        """``[event id, packed charge as hex]`` per charge, in order (for the state's JSON)."""
        return [[event_id, encode_charge(r).hex()] for event_id, r in self._records.items()]

    @classmethod
    def from_json(cls, raw: list[list[str]]) -> ChargeWindow:
        window = cls()
        for event_id, data in raw:
            window.put(decode_charge(bytes.fromhex(data), event_id))
        return window


class _NoCharges:
    """Remembers nothing: corrections answer ``unknown_event``."""

    def get(self, event_id: str) -> ChargeRecord | None:
        return None

    def put(self, record: ChargeRecord) -> None:
        return None

    def charged(self, parts: ChargeParts) -> None:
        return None

    def void(self, event_id: str, at: int) -> None:
        return None

    def expire(self, horizon: int) -> None:
        return None

    def corrected(self, command_id: str) -> bool:
        return False

    def remember_correction(self, command_id: str, at: int) -> None:
        return None


NO_CHARGES: ChargeMemory = _NoCharges()
