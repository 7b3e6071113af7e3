"""The first pass of a backfill: what would be sent, what is refused and why, and the totals.

Pure over its inputs (records, a price book, a window): the CLI does the reading and printing.
Refusals carry the reason the pipeline would give: the SDK's validation message, the price
book's (an unknown feature or unit, a negative quantity), or the window's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import NamedTuple

from metering.backfill.source import SourceRecord
from metering.backfill.window import Window
from metering.domain.errors import PricingError
from metering.domain.pricing import PriceBook
from metering.sdk.errors import InvalidUsageEvent
from metering.sdk.validation import validate_usage_event


class Refusal(NamedTuple):
    position: int
    reason: str
    raw: str


class Total(NamedTuple):
    events: int
    micros: int


def event_key(event_id: str) -> int:
    """8 bytes of the event id's hash: a duplicate check over millions of ids in bounded
    memory (a false duplicate needs a 64-bit collision inside one file)."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "big")


@dataclass
class Scan:
    """What a file holds, once read to the end."""

    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused_by: Counter[str] = field(default_factory=Counter)
    """Refusals counted by kind (the reason up to its first ':')."""
    totals: dict[tuple[str, str], Total] = field(default_factory=dict)
    """(account, subject) -> events and micro-credits at list price (before grants)."""
    refused_positions: set[int] = field(default_factory=set)
    first: int | None = None
    last: int | None = None
    """The oldest and newest accepted ``occurred_at``."""

    @property
    def refused(self) -> int:
        return sum(self.refused_by.values())


def scan(
    records: Iterable[SourceRecord],
    prices: PriceBook,
    window: Window,
    on_refusal: Callable[[Refusal], None],
) -> Scan:
    """Read every record once; each refused record goes to ``on_refusal`` with its reason."""
    out = Scan()
    seen: set[int] = set()
    totals: dict[tuple[str, str], list[int]] = {}

    def refuse(record: SourceRecord, reason: str) -> None:
        out.refused_by[reason.split(":", 1)[0]] += 1
        out.refused_positions.add(record.position)
        on_refusal(Refusal(record.position, reason, record.raw))

    for record in records:
        out.records += 1
        event = record.event
        if event is None:
            refuse(record, f"unreadable: {record.problem}")
            continue
        try:
            validate_usage_event(event)
        except InvalidUsageEvent as exc:
            refuse(record, f"invalid: {exc.field}: {exc.reason}")
            continue
        at = event["occurred_at"]
        problem = window.problem(at)
        if problem is not None:
            refuse(record, problem)
            continue
        try:
            micros, _ = prices.price(event["feature"], event.get("model"), event["units"], at)
        except PricingError as exc:
            refuse(record, f"{exc.code}: {exc}")
            continue
        key = event_key(event["event_id"])
        if key in seen:
            out.duplicates += 1
            continue
        seen.add(key)
        out.accepted += 1
        out.first = at if out.first is None else min(out.first, at)
        out.last = at if out.last is None else max(out.last, at)
        row = totals.setdefault((event["account_id"], event.get("subject") or "default"), [0, 0])
        row[0] += 1
        row[1] += micros
    out.totals = {k: Total(n, m) for k, (n, m) in sorted(totals.items())}
    return out
