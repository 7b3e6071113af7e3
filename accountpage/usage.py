"""ClickHouse reads behind the account page: usage by subject and feature, the burn-down and
the pace behind the runway.

Per-dimension totals come from :mod:`consumers.queries`; the two-dimension table, the
balance series and the 7-day pace are the page's own, in the same style (bound parameters,
``sum`` over the ``usage_daily`` rollup or ``ledger_entries``). Calls are synchronous
(clickhouse-connect): run them off the loop. Amounts are integer micro-credits throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from clickhouse_connect.driver.client import Client

from consumers.queries import Period, usage_by

_BY_SUBJECT_FEATURE = """
SELECT subject, feature,
       sum(credits) AS credits,
       sum(overage_credits) AS overage_credits,
       sum(events) AS events
FROM usage_daily
WHERE account_id = {account:String} AND day >= {start:Date} AND day < {end:Date}
GROUP BY subject, feature
HAVING events != 0 OR credits != 0
ORDER BY subject, feature
"""

_BURNDOWN = """
SELECT seq, toUnixTimestamp64Milli(occurred_at) AS at, type, amount, balance_after,
       overage_after
FROM ledger_entries
WHERE account_id = {account:String}
  AND occurred_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')
  AND occurred_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')
ORDER BY seq
"""

_CORRECTIONS = """
SELECT event_id, command_id, kind, credits_returned, credits_charged, reason, subject, feature,
       toUnixTimestamp64Milli(event_occurred_at) AS occurred_at,
       toUnixTimestamp64Milli(recorded_at) AS recorded_at
FROM corrections
WHERE account_id = {account:String}
  AND event_occurred_at >= toDateTime64({start:Date}, 3, 'UTC')
  AND event_occurred_at < toDateTime64({end:Date}, 3, 'UTC')
ORDER BY seq DESC
LIMIT 100
"""
"""Voids and amends of the period's usage (by the event's time: the period they apply to),
newest first."""

_LEDGER_HEAD = """
SELECT count() AS entries, max(seq) AS max_seq,
       (SELECT count() FROM usage_events WHERE account_id = {account:String}) AS usage_events
FROM ledger_entries WHERE account_id = {account:String}
"""

_PACE = """
SELECT toInt64(-sumIf(amount, type IN ('USAGE_DEBIT', 'OVERAGE', 'USAGE_REVERSED')
                      AND occurred_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')))
           AS used,
       toInt64(toUnixTimestamp64Milli(min(occurred_at))) AS first_at,
       count() AS entries
FROM ledger_entries
WHERE account_id = {account:String}
  AND occurred_at < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')
"""
"""Credits spent (debits and overage, less what corrections gave back) since ``since_ms``, and
when the account's ledger begins."""

DAY_MS = 86_400_000
PACE_WINDOW_MS = 7 * DAY_MS
"""The runway's pace: what the account spent over the last 7 days..."""
MIN_PACE_WINDOW_MS = DAY_MS
"""...or since its first ledger entry when younger, but never over less than a day (an hour
of history must not be read as a whole day's pace)."""


def period_days(period_start_ms: int, period_end_ms: int, now_ms: int) -> Period:
    """The UTC days ``[start, end)`` covering a billing period (this month if unknown)."""
    if period_start_ms > 0 and period_end_ms > period_start_ms:
        start = _day(period_start_ms)
        end = _day(period_end_ms - 1) + timedelta(days=1)
        return Period(start, end)
    today = _day(now_ms)
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return Period(first, following)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=params)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


@dataclass(frozen=True, slots=True)
class Pace:
    """``used`` micro-credits spent (USAGE_DEBIT + OVERAGE) in ``[since, until)`` (ms)."""

    used: int
    since: int
    until: int

    def to_json(self) -> dict[str, int]:
        return {"used": self.used, "since": self.since, "until": self.until}


def pace_window(now_ms: int, first_at_ms: int | None) -> int:
    """How many ms the pace is measured over: the last 7 days, or the account's age when it is
    younger (no less than a day). Usage before the first entry does not exist, so the sum
    over the last 7 days is also the sum over this shorter window."""
    if first_at_ms is None:
        return PACE_WINDOW_MS
    return min(PACE_WINDOW_MS, max(MIN_PACE_WINDOW_MS, now_ms - first_at_ms))


def read_pace(client: Client, account: str, now_ms: int) -> Pace:
    """The account's spend over :func:`pace_window` ending at ``now_ms`` (one query)."""
    params = {"account": account, "since_ms": now_ms - PACE_WINDOW_MS, "until_ms": now_ms}
    row = _rows(client, _PACE, params)[0]
    first_at = int(row["first_at"]) if int(row["entries"]) > 0 else None
    window = pace_window(now_ms, first_at)
    return Pace(used=max(0, int(row["used"])), since=now_ms - window, until=now_ms)


RunwayStatus = Literal["runs_out", "outlasts", "no_usage", "exhausted"]


@dataclass(frozen=True, slots=True)
class Runway:
    """When the credits run out at the recent pace (``runout`` ms), if before ``period_end``."""

    status: RunwayStatus
    available: int
    used: int
    since: int
    until: int
    period_end: int
    runout: int | None
    """Set only for ``runs_out``: ``until + available * window // used`` (integer ms)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "available": self.available,
            "used": self.used,
            "since": self.since,
            "until": self.until,
            "period_end": self.period_end,
            "runout_ms": self.runout,
        }


def runway(available: int, pace: Pace, period_end_ms: int) -> Runway:
    """The runway of ``available`` micro-credits at ``pace`` (integer arithmetic only).

    ``exhausted`` when nothing is left, ``no_usage`` when nothing was spent in the window,
    ``outlasts`` when the run-out falls on or after the period's end (the period's grants
    reset then), else ``runs_out`` with the run-out instant.
    """

    def make(status: RunwayStatus, runout: int | None = None) -> Runway:
        return Runway(status, available, pace.used, pace.since, pace.until, period_end_ms, runout)

    if available <= 0:
        return make("exhausted")
    if pace.used <= 0:
        return make("no_usage")
    runout = pace.until + available * (pace.until - pace.since) // pace.used
    if runout >= period_end_ms:
        return make("outlasts")
    return make("runs_out", runout)


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What the page's usage panel shows (all amounts micro-credits)."""

    period: Period
    rows: list[dict[str, Any]]
    """One row per (subject, feature): credits, overage_credits, events."""
    subjects: list[dict[str, Any]]
    """One row per subject (from ``consumers.queries.usage_by``)."""
    burndown: list[dict[str, Any]]
    """Ledger entries of the period in seq order: at (ms), balance_after, overage_after."""
    corrections: list[dict[str, Any]]
    """Voids and amends of the period's usage, newest first (at most 100)."""
    ledger_entries: int
    ledger_max_seq: int
    usage_events: int
    """All-time counts in ClickHouse (the demo waits on them to know the sink caught up)."""
    pace: Pace
    """Spend over the last 7 days (or the account's age), for the runway."""
    period_end_ms: int
    """The period's end (ms) the report was read for."""

    def runway(self, available: int) -> Runway:
        return runway(available, self.pace, self.period_end_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "rows": self.rows,
            "subjects": self.subjects,
            "burndown": self.burndown,
            "corrections": self.corrections,
            "ledger_entries": self.ledger_entries,
            "ledger_max_seq": self.ledger_max_seq,
            "usage_events": self.usage_events,
            "pace": self.pace.to_json(),
        }


def usage_report(
    client: Client, account: str, period_start_ms: int, period_end_ms: int, now_ms: int
) -> UsageReport:
    """Everything the usage panel needs for ``account``'s current period, in six queries."""
    period = period_days(period_start_ms, period_end_ms, now_ms)
    params = {"account": account, **period.params()}
    rows = [
        {
            "subject": r["subject"],
            "feature": r["feature"],
            "credits": int(r["credits"]),
            "overage_credits": int(r["overage_credits"]),
            "events": int(r["events"]),
        }
        for r in _rows(client, _BY_SUBJECT_FEATURE, params)
    ]
    subjects = [
        {
            "subject": r["key"],
            "credits": int(r["credits"]),
            "overage_credits": int(r["overage_credits"]),
            "events": int(r["events"]),
        }
        for r in usage_by(client, account, period, "subject")
    ]
    start_ms = period_start_ms if period_start_ms > 0 else _ms(period.start)
    end_ms = period_end_ms if period_end_ms > start_ms else _ms(period.end)
    burndown = [
        {
            "seq": int(r["seq"]),
            "at": int(r["at"]),
            "type": r["type"],
            "balance_after": int(r["balance_after"]),
            "overage_after": int(r["overage_after"]),
        }
        for r in _rows(
            client, _BURNDOWN, {"account": account, "start_ms": start_ms, "end_ms": end_ms}
        )
    ]
    corrections = [
        {
            "event_id": r["event_id"],
            "command_id": r["command_id"],
            "kind": r["kind"],
            "credits_returned": int(r["credits_returned"]),
            "credits_charged": int(r["credits_charged"]),
            "reason": r["reason"],
            "subject": r["subject"],
            "feature": r["feature"],
            "occurred_at": int(r["occurred_at"]),
            "recorded_at": int(r["recorded_at"]),
        }
        for r in _rows(client, _CORRECTIONS, params)
    ]
    head = _rows(client, _LEDGER_HEAD, {"account": account})[0]
    return UsageReport(
        period=period,
        rows=rows,
        subjects=subjects,
        burndown=burndown,
        corrections=corrections,
        ledger_entries=int(head["entries"]),
        ledger_max_seq=int(head["max_seq"] or 0),
        usage_events=int(head["usage_events"]),
        pace=read_pace(client, account, now_ms),
        period_end_ms=end_ms,
    )


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
