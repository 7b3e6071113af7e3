"""The relay's wire format: values survive JSON typed by their ClickHouse column types."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from consumers.query_relay import RelayResult, encode_parameters, encode_result, read_problem


def test_rows_come_back_typed_by_their_columns() -> None:
    rows = [
        (
            date(2026, 11, 30),
            datetime(2026, 11, 30, 12, 0, 1, 5000),
            {"tokens": 12},
            Decimal("1.50"),
        )
    ]
    types = ["Date", "Nullable(DateTime64(3, 'UTC'))", "Map(String, Int64)", "Decimal(18, 2)"]
    body = encode_result(["day", "at", "units", "price"], types, rows)
    decoded = RelayResult.decode(body)
    assert decoded.column_names == ("day", "at", "units", "price")
    assert decoded.result_rows == rows


def test_nulls_and_big_integers_pass_unchanged() -> None:
    body = encode_result(["x", "n"], ["Nullable(Date)", "Int64"], [(None, 2**62 + 1)])
    assert RelayResult.decode(body).result_rows == [(None, 2**62 + 1)]


def test_parameters_travel_as_clickhouse_text() -> None:
    params = encode_parameters({"start": date(2026, 11, 1), "subject": None, "limit": 10})
    assert params == {"start": "2026-11-01", "subject": None, "limit": 10}


def test_a_missing_database_is_one_line_that_says_what_to_do() -> None:
    exc = RuntimeError("Code: 81. DB::Exception: Database x does not exist. (UNKNOWN_DATABASE)\nat")
    problem = read_problem(exc, "x")
    assert "'x' does not exist" in problem and "metering clickhouse migrate" in problem
    assert "\n" not in read_problem(RuntimeError("first\nsecond"), "x")
