"""Read API over the ClickHouse history: usage and credits by subject, feature, model and day.

Every filter value travels as a server-side bound parameter (``{name:Type}`` with
clickhouse-connect ``parameters=``), never spliced into the SQL text; only the group-by
column is chosen from a fixed whitelist. Reads go through the ``usage_daily`` rollup, whose
rows are partial sums until merged, hence ``sum``/``sumMap`` with ``GROUP BY`` everywhere.
Periods are half-open ``[start, end)`` days in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from clickhouse_connect.driver.client import Client

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
GROUP BY key
ORDER BY credits DESC, events DESC, key
"""

_USAGE_BY_RAW = """
SELECT key, sum(credits) AS credits, sum(overage_credits) AS overage_credits,
       sum(events) AS events, sumMap(units) AS units
FROM (
    SELECT {dim} AS key, toInt64(0) AS credits, toInt64(0) AS overage_credits,
           count() AS events, sumMap(units) AS units
    FROM usage_events
    WHERE account_id = {{account:String}}
      AND occurred_at >= toDateTime64({{start:Date}}, 3, 'UTC')
      AND occurred_at < toDateTime64({{end:Date}}, 3, 'UTC')
    GROUP BY key
    UNION ALL
    SELECT {dim} AS key, toInt64(-sum(amount)) AS credits,
           toInt64(-sumIf(amount, type = 'OVERAGE')) AS overage_credits,
           toUInt64(0) AS events, CAST(map(), 'Map(String, Int64)') AS units
    FROM ledger_entries
    WHERE account_id = {{account:String}} AND type IN ('USAGE_DEBIT', 'OVERAGE')
      AND occurred_at >= toDateTime64({{start:Date}}, 3, 'UTC')
      AND occurred_at < toDateTime64({{end:Date}}, 3, 'UTC')
    GROUP BY key
)
GROUP BY key
ORDER BY credits DESC, events DESC, key
"""

_DAILY = """
SELECT day, sum(credits) AS credits, sum(events) AS events, sumMap(units) AS units
FROM usage_daily
WHERE account_id = {account:String} AND day >= {start:Date} AND day < {end:Date}
  AND ({subject:Nullable(String)} IS NULL OR subject = {subject:Nullable(String)})
GROUP BY day
ORDER BY day
"""

_TOP_ACCOUNTS = """
SELECT account_id AS key, sum(credits) AS credits, sum(overage_credits) AS overage_credits,
       sum(events) AS events, sumMap(units) AS units
FROM usage_daily
WHERE day >= {start:Date} AND day < {end:Date}
GROUP BY key
ORDER BY credits DESC, events DESC, key
LIMIT {limit:UInt32}
"""

_CREDITS_BY_SUBJECT = """
SELECT subject AS key, sum(credits) AS credits, sum(overage_credits) AS overage_credits,
       sum(events) AS events, uniqExact(account_id) AS accounts
FROM usage_daily
WHERE day >= {start:Date} AND day < {end:Date}
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


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=params)
    names = result.column_names
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


def _dimension(by: str) -> str:
    if by not in DIMENSIONS:
        raise ValueError(f"group by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    return by


def usage_by(
    client: Client, account: str, period: Period, by: Dimension = "subject", *, raw: bool = False
) -> list[dict[str, Any]]:
    """Credits (micro), overage, events and units per subject/feature/model of one account.

    ``raw=True`` answers from the history tables instead of the rollup (same result).
    """
    sql = (_USAGE_BY_RAW if raw else _USAGE_BY).format(dim=_dimension(by))
    return _rows(client, sql, {"account": account, **period.params()})


def daily_series(
    client: Client, account: str, period: Period, subject: str | None = None
) -> list[dict[str, Any]]:
    """One row per day with usage (days without usage are absent)."""
    return _rows(client, _DAILY, {"account": account, "subject": subject, **period.params()})


def top_accounts(client: Client, period: Period, limit: int = 10) -> list[dict[str, Any]]:
    return _rows(client, _TOP_ACCOUNTS, {"limit": limit, **period.params()})


def credits_by_subject(client: Client, period: Period) -> list[dict[str, Any]]:
    """Credits per subject across all accounts, with how many accounts used each."""
    return _rows(client, _CREDITS_BY_SUBJECT, period.params())
