"""The first pass of a backfill: what would be sent, what is refused and why, and the totals.

Pure over its inputs (records, a price book, a window): the CLI does the reading and printing.
Refusals carry the reason the pipeline would give: the SDK's validation message, the price
book's (an unknown feature or unit, a negative quantity), or the window's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from metering.backfill.source import SourceRecord
from metering.backfill.window import Window
from metering.domain.errors import PricingError
from metering.domain.pricing import PriceBook
from metering.sdk.errors import InvalidUsageEvent


class Refusal(NamedTuple):
    position: int
    reason: str
    raw: str


class Total(NamedTuple):
    events: int
    micros: int


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

    @property
    def refused(self) -> int:
        return sum(self.refused_by.values())


def scan(
    records: Iterable[SourceRecord],
    prices: PriceBook,
    window: Window,
    *,
    encode: Callable[[dict[str, Any]], bytes],
    on_refusal: Callable[[Refusal], None],
    on_accepted: Callable[[bytes, bytes], None] | None = None,
) -> Scan:
    """Read every record once. ``encode`` validates and encodes an event (the SDK's
    :func:`~metering.sdk.usage_encoder`); each refused record goes to ``on_refusal`` with its
    reason, each accepted one to ``on_accepted`` as (key, encoded value), once per event id."""
    out = Scan()
    seen: set[str] = set()  # exact ids: a hash collision would drop an event silently
    totals: dict[tuple[str, str], list[int]] = {}

    def refuse(record: SourceRecord, reason: str) -> None:
        out.refused_by[reason.split(":", 1)[0]] += 1
        raw = record.raw or json.dumps(record.event, default=str)[:1000]
        on_refusal(Refusal(record.position, reason, raw))

    for record in records:
        out.records += 1
        event = record.event
        if event is None:
            refuse(record, f"unreadable: {record.problem}")
            continue
        try:
            value = encode(event)
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
        event_id = event["event_id"]
        if event_id in seen:
            out.duplicates += 1
            continue
        seen.add(event_id)
        out.accepted += 1
        if on_accepted is not None:
            on_accepted(event["account_id"].encode(), value)
        row = totals.setdefault((event["account_id"], event.get("subject") or "default"), [0, 0])
        row[0] += 1
        row[1] += micros
    out.totals = {k: Total(n, m) for k, (n, m) in sorted(totals.items())}
    return out
