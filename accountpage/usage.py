"""ClickHouse reads behind the account page: usage by subject and feature, and the burn-down.

Per-dimension totals come from :mod:`consumers.queries`; the two-dimension table and the
balance series are the page's own, in the same style (bound parameters, ``sum`` over the
``usage_daily`` rollup). Calls are synchronous (clickhouse-connect): run them off the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

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

_LEDGER_HEAD = """
SELECT count() AS entries, max(seq) AS max_seq,
       (SELECT count() FROM usage_events WHERE account_id = {account:String}) AS usage_events
FROM ledger_entries WHERE account_id = {account:String}
"""


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
class UsageReport:
    """What the page's usage panel shows (all amounts micro-credits)."""

    period: Period
    rows: list[dict[str, Any]]
    """One row per (subject, feature): credits, overage_credits, events."""
    subjects: list[dict[str, Any]]
    """One row per subject (from ``consumers.queries.usage_by``)."""
    burndown: list[dict[str, Any]]
    """Ledger entries of the period in seq order: at (ms), balance_after, overage_after."""
    ledger_entries: int
    ledger_max_seq: int
    usage_events: int
    """All-time counts in ClickHouse (the demo waits on them to know the sink caught up)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "rows": self.rows,
            "subjects": self.subjects,
            "burndown": self.burndown,
            "ledger_entries": self.ledger_entries,
            "ledger_max_seq": self.ledger_max_seq,
            "usage_events": self.usage_events,
        }


def usage_report(
    client: Client, account: str, period_start_ms: int, period_end_ms: int, now_ms: int
) -> UsageReport:
    """Everything the usage panel needs for ``account``'s current period, in four queries."""
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
    head = _rows(client, _LEDGER_HEAD, {"account": account})[0]
    return UsageReport(
        period=period,
        rows=rows,
        subjects=subjects,
        burndown=burndown,
        ledger_entries=int(head["entries"]),
        ledger_max_seq=int(head["max_seq"] or 0),
        usage_events=int(head["usage_events"]),
    )


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def open_reader(url: str, database: str) -> Client:
    """A ClickHouse client of the page's own, apart from the sink's cached one.

    Same engine (chDB allows several handles on one path in a process), but its own handle or
    HTTP session, so page reads never interleave with the sink's inserts on one client.
    """
    import clickhouse_connect

    from consumers.clickhouse import chdb_path, is_embedded

    if is_embedded(url):
        path = chdb_path(url)
        if path in ("", "memory", ":memory:"):
            return clickhouse_connect.get_client(interface="chdb", database=database)
        return clickhouse_connect.get_client(interface="chdb", path=path, database=database)
    return clickhouse_connect.get_client(dsn=url, database=database, autogenerate_session_id=False)
