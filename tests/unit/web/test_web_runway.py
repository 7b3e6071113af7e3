"""The runway: the 7-day pace read from ClickHouse and when the balance runs out at it.

No ClickHouse here: a fake client answers the page's queries by their text, and records the
bound parameters so the windows can be checked to the millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from accountpage.app import AccountPage
from accountpage.usage import (
    DAY_MS,
    MIN_PACE_WINDOW_MS,
    PACE_WINDOW_MS,
    Pace,
    pace_window,
    read_pace,
    runway,
    usage_report,
)
from projections.balance import Balance

MICRO = 1_000_000
NOW = 1_796_098_000_000  # 2026-12-01T04:06:40Z
PERIOD_START = 1_796_083_200_000  # 2026-12-01T00:00:00Z
PERIOD_END = 1_798_761_600_000  # 2027-01-01T00:00:00Z


@dataclass
class _Result:
    column_names: tuple[str, ...]
    result_rows: list[tuple[Any, ...]]


@dataclass
class FakeClickHouse:
    """Answers each query by a word of its SQL; remembers (sql, parameters)."""

    used: int = 0
    first_at: int | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def query(self, sql: str, parameters: dict[str, Any]) -> _Result:
        self.calls.append((sql, parameters))
        if "sumIf(amount" in sql:
            entries = 0 if self.first_at is None else 3
            return _Result(
                ("used", "first_at", "entries"), [(self.used, self.first_at or 0, entries)]
            )
        if "max(seq)" in sql:
            return _Result(("entries", "max_seq", "usage_events"), [(3, 3, 1)])
        if "GROUP BY subject, feature" in sql:
            return _Result(("subject", "feature", "credits", "overage_credits", "events"), [])
        if "GROUP BY key" in sql:
            return _Result(("key", "credits", "overage_credits", "events", "units"), [])
        return _Result(("seq", "at", "type", "amount", "balance_after", "overage_after"), [])

    def pace_params(self) -> dict[str, Any]:
        return next(p for sql, p in self.calls if "sumIf(amount" in sql)


def test_pace_window_is_seven_days_or_the_accounts_age_but_at_least_a_day() -> None:
    assert pace_window(NOW, None) == PACE_WINDOW_MS == 7 * DAY_MS
    assert pace_window(NOW, NOW - 30 * DAY_MS) == PACE_WINDOW_MS
    assert pace_window(NOW, NOW - 3 * DAY_MS - 5) == 3 * DAY_MS + 5
    assert pace_window(NOW, NOW - 3_600_000) == MIN_PACE_WINDOW_MS == DAY_MS
    assert pace_window(NOW, NOW + 1) == DAY_MS  # clock skew: never zero or negative


def test_read_pace_binds_the_last_seven_days_and_shrinks_to_a_young_account() -> None:
    old = FakeClickHouse(used=70 * MICRO, first_at=NOW - 40 * DAY_MS)
    assert read_pace(old, "acme", NOW) == Pace(70 * MICRO, NOW - 7 * DAY_MS, NOW)  # type: ignore[arg-type]
    assert old.pace_params() == {"account": "acme", "since_ms": NOW - 7 * DAY_MS, "until_ms": NOW}
    young = FakeClickHouse(used=5 * MICRO, first_at=NOW - 2 * DAY_MS)
    assert read_pace(young, "acme", NOW) == Pace(5 * MICRO, NOW - 2 * DAY_MS, NOW)  # type: ignore[arg-type]
    empty = FakeClickHouse()
    assert read_pace(empty, "acme", NOW) == Pace(0, NOW - 7 * DAY_MS, NOW)  # type: ignore[arg-type]


def test_runway_runs_out_at_the_exact_integer_instant() -> None:
    # 700 credits over 7 days = 100 a day; 1,000 left -> 10 days from now.
    pace = Pace(700 * MICRO, NOW - 7 * DAY_MS, NOW)
    r = runway(1_000 * MICRO, pace, NOW + 30 * DAY_MS)
    assert (r.status, r.runout) == ("runs_out", NOW + 10 * DAY_MS)
    # Amounts beyond a float's 53 bits stay exact: floor(available * window / used).
    huge = 9_007_199_254_740_993  # 2**53 + 1 micro-credits
    r = runway(huge, Pace(3, NOW - 7 * DAY_MS, NOW), 2**100)
    assert r.runout == NOW + huge * 7 * DAY_MS // 3
    # One micro-credit left at a brisk pace: runs out within the millisecond window math.
    r = runway(1, Pace(7 * DAY_MS * 10, NOW - 7 * DAY_MS, NOW), PERIOD_END)
    assert (r.status, r.runout) == ("runs_out", NOW)


def test_runway_outlasts_no_usage_and_exhausted() -> None:
    pace = Pace(700 * MICRO, NOW - 7 * DAY_MS, NOW)
    ends_on_the_day = runway(1_000 * MICRO, pace, NOW + 10 * DAY_MS)
    assert (ends_on_the_day.status, ends_on_the_day.runout) == ("outlasts", None)
    assert runway(1_000 * MICRO, pace, NOW + 10 * DAY_MS + 1).status == "runs_out"
    assert runway(1_000 * MICRO, Pace(0, NOW - 7 * DAY_MS, NOW), PERIOD_END).status == "no_usage"
    assert runway(0, pace, PERIOD_END).status == "exhausted"
    assert runway(-5, Pace(0, NOW - 7 * DAY_MS, NOW), PERIOD_END).runout is None
    assert runway(10_000 * MICRO, pace, PERIOD_END).to_json() == {  # 100 days > the period
        "status": "outlasts",
        "available": 10_000 * MICRO,
        "used": 700 * MICRO,
        "since": NOW - 7 * DAY_MS,
        "until": NOW,
        "period_end": PERIOD_END,
        "runout_ms": None,
    }


def test_usage_report_carries_the_pace_and_the_period_end() -> None:
    client = FakeClickHouse(used=14 * MICRO, first_at=PERIOD_START)
    report = usage_report(client, "acme", PERIOD_START, PERIOD_END, NOW)  # type: ignore[arg-type]
    body = report.to_json()
    window = DAY_MS  # the ledger began 4 h ago: a day's window, not 4 h
    assert body["pace"] == {"used": 14 * MICRO, "since": NOW - window, "until": NOW}
    assert report.period_end_ms == PERIOD_END
    r = report.runway(7 * MICRO)  # 14 a day, 7 left: half a day
    assert (r.status, r.runout) == ("runs_out", NOW + DAY_MS // 2)


def _balance(available: int) -> Balance:
    return Balance(
        account_id="acme",
        available=available,
        reserved=0,
        overage_used=0,
        overage_limit=0,
        policy="block",
        plan="growth",
        features=None,
        period_start=PERIOD_START,
        period_end=PERIOD_END,
        seq=3,
        updated_at=NOW,
        grants=[],
    )


@pytest.mark.parametrize(
    ("available", "used", "status"),
    [
        (7 * MICRO, 14 * MICRO, "runs_out"),
        (10**6 * MICRO, 14 * MICRO, "outlasts"),
        (5, 0, "no_usage"),
    ],
)
def test_usage_endpoint_body_has_the_runway_of_the_redis_balance(
    available: int, used: int, status: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClickHouse(used=used, first_at=NOW - 30 * DAY_MS)
    monkeypatch.setattr("accountpage.app.now_ms", lambda: NOW)
    page = AccountPage(sidecar=None, access=None, clickhouse=lambda: client)  # type: ignore[arg-type]
    body = page._usage_report("acme", _balance(available))
    assert body["runway"]["status"] == status
    assert body["runway"]["available"] == available
    assert body["runway"]["period_end"] == PERIOD_END
    if status == "runs_out":
        assert body["runway"]["runout_ms"] == NOW + available * 7 * DAY_MS // used
    else:
        assert body["runway"]["runout_ms"] is None
