"""Read API over the ClickHouse history: usage and credits by subject, feature, model and day.

Every filter value travels as a server-side bound parameter (``{name:Type}`` with
clickhouse-connect ``parameters=``), never spliced into the SQL text; only the group-by
column is chosen from a fixed whitelist. Reads go through the ``usage_daily`` view (migration
0003), one row per (account, subject, feature, model, day), summed here with ``sum``/``sumMap``
and ``GROUP BY``. ``events`` and ``units`` count accepted usage events once (the ledger
decides); see docs/clickhouse.md. The view also has rows holding only records the ledger never
accepted (``usage_records``, ``rejected_events``); these reads skip them
(``events != 0 OR credits != 0``). Periods are half-open ``[start, end)`` days in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from consumers.query_relay import Reader

Dimension = Literal["subject", "feature", "model"]
DIMENSIONS: tuple[Dimension, ...] = ("subject", "feature", "model")

_USAGE_BY = """
SELECT {dim} AS key,
       sum(credits) AS credits,
       sum(overage_credits) AS overage_credits,
       sum(events) AS events,
       sumMap(units) AS units
FROM usage_daily
WHERE account_id = {{account:String}} AND day >= {{start:Date}} AND day < {{end:Date}}
  AND (usage_daily.events != 0 OR usage_daily.credits != 0)
GROUP BY key
ORDER BY credits DESC, events DESC, key
"""

_USAGE_BY_RAW = """
SELECT key, sum(credits) AS credits, sum(overage_credits) AS overage_credits,
       sum(events) AS events, mapFilter((k, v) -> v != 0, sumMap(units)) AS units
FROM (
    SELECT {dim} AS key, toInt64(-sum(amount)) AS credits,
           toInt64(-sumIf(amount, type = 'OVERAGE')
                   - sumIf(amount - arraySum(allocations.amount), type = 'USAGE_REVERSED'))
               AS overage_credits,
           toInt64(uniqExactIf(cause_id, type != 'USAGE_REVERSED' AND NOT amended))
               + toInt64(uniqExactIf(replaceRegexpOne(entry_id, ':(USAGE_DEBIT|OVERAGE):', ':'),
                                     amended))
               - toInt64(countIf(type = 'USAGE_REVERSED')) AS events,
           CAST(map(), 'Map(String, Int64)') AS units
    FROM (SELECT *, ifNull(reason, '') = 'amended' AS amended FROM ledger_entries)
    WHERE account_id = {{account:String}} AND type IN ('USAGE_DEBIT', 'OVERAGE', 'USAGE_REVERSED')
      AND occurred_at >= toDateTime64({{start:Date}}, 3, 'UTC')
      AND occurred_at < toDateTime64({{end:Date}}, 3, 'UTC')
    GROUP BY key
    UNION ALL
    SELECT {dim} AS key, toInt64(0) AS credits, toInt64(0) AS overage_credits,
           toInt64(0) AS events, sumMap(units) AS units
    FROM (
        SELECT subject_key AS subject, feature, model, units
        FROM (
            SELECT if(subject = '', 'default', subject) AS subject_key, feature, model, units,
                   cityHash64(subject_key, feature, model, occurred_at, event_id) AS event_key
            FROM usage_events
            WHERE account_id = {{account:String}}
              AND occurred_at >= toDateTime64({{start:Date}}, 3, 'UTC')
              AND occurred_at < toDateTime64({{end:Date}}, 3, 'UTC')
        )
        WHERE event_key IN (
            SELECT cityHash64(subject, feature, model, occurred_at, cause_id)
            FROM ledger_entries
            WHERE account_id = {{account:String}} AND type IN ('USAGE_DEBIT', 'OVERAGE')
              AND occurred_at >= toDateTime64({{start:Date}}, 3, 'UTC')
              AND occurred_at < toDateTime64({{end:Date}}, 3, 'UTC'))
        LIMIT 1 BY event_key
    )
    GROUP BY key
)
GROUP BY key
ORDER BY credits DESC, events DESC, key
"""
"""The same answer as ``_USAGE_BY`` from the history tables alone: credits from the ledger
(corrections netted), events = distinct causes of USAGE_DEBIT/OVERAGE entries, plus one per
amend (its new charge), less one per USAGE_REVERSED (voids and amends), units = one record of
each accepted event (its usage record with the ledger entry's subject, feature, model, time
and event id; re-sent copies count once, records the ledger never accepted not at all)."""

_DAILY = """
SELECT day, sum(credits) AS credits, sum(events) AS events, sumMap(units) AS units
FROM usage_daily
WHERE account_id = {account:String} AND day >= {start:Date} AND day < {end:Date}
  AND ({subject:Nullable(String)} IS NULL OR subject = {subject:Nullable(String)})
  AND (usage_daily.events != 0 OR usage_daily.credits != 0)
GROUP BY day
ORDER BY day
"""

_TOP_ACCOUNTS = """
SELECT account_id AS key, sum(credits) AS credits, sum(overage_credits) AS overage_credits,
       sum(events) AS events, sumMap(units) AS units
FROM usage_daily
WHERE day >= {start:Date} AND day < {end:Date}
  AND (usage_daily.events != 0 OR usage_daily.credits != 0)
GROUP BY key
ORDER BY credits DESC, events DESC, key
LIMIT {limit:UInt32}
"""

_CREDITS_BY_SUBJECT = """
SELECT subject AS key, sum(credits) AS credits, sum(overage_credits) AS overage_credits,
       sum(events) AS events, uniqExact(account_id) AS accounts
FROM usage_daily
WHERE day >= {start:Date} AND day < {end:Date}
  AND (usage_daily.events != 0 OR usage_daily.credits != 0)
GROUP BY key
ORDER BY credits DESC, key
"""


@dataclass(frozen=True, slots=True)
class Period:
    """Half-open day range ``[start, end)`` in UTC."""

    start: date
    end: date

    def params(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end}

    @classmethod
    def this_month(cls, today: date | None = None) -> Period:
        """The calendar month (UTC) of ``today`` (default: now)."""
        day = today or datetime.now(UTC).date()
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return cls(start, end)


def _rows(client: Reader, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=params)
    names = result.column_names
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


def _dimension(by: str) -> str:
    if by not in DIMENSIONS:
        raise ValueError(f"group by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    return by


def usage_by(
    client: Reader, account: str, period: Period, by: Dimension = "subject", *, raw: bool = False
) -> list[dict[str, Any]]:
    """Credits (micro), overage, events and units per subject/feature/model of one account.

    ``events``/``units``: accepted usage events, each once. ``raw=True`` answers from the
    history tables instead of the rollup (same result; it reads every event of the period).
    """
    sql = (_USAGE_BY_RAW if raw else _USAGE_BY).format(dim=_dimension(by))
    return _rows(client, sql, {"account": account, **period.params()})


def daily_series(
    client: Reader, account: str, period: Period, subject: str | None = None
) -> list[dict[str, Any]]:
    """One row per day with usage (days without usage are absent)."""
    return _rows(client, _DAILY, {"account": account, "subject": subject, **period.params()})


def top_accounts(client: Reader, period: Period, limit: int = 10) -> list[dict[str, Any]]:
    return _rows(client, _TOP_ACCOUNTS, {"limit": limit, **period.params()})


def credits_by_subject(client: Reader, period: Period) -> list[dict[str, Any]]:
    """Credits per subject across all accounts, with how many accounts used each."""
    return _rows(client, _CREDITS_BY_SUBJECT, period.params())
