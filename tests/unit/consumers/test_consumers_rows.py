"""Record -> row mapping, migration parsing and credit formatting (no I/O)."""

from __future__ import annotations

import re

import pytest

from consumers.migrations import load_migrations
from consumers.queries_cli import format_credits, render
from consumers.rows import LEDGER_COLUMNS, USAGE_COLUMNS, RowError, ledger_row, usage_row


def test_usage_row_defaults_optional_keys() -> None:
    rec = {
        "event_id": "e1",
        "account_id": "a",
        "subject": "design",
        "feature": "text_generation",
        "model": None,
        "units": {"requests": 1},
        "occurred_at": 1_700_000_000_123,
        "source": "api",
        "attributes": {},
        "reservation_id": None,
    }
    row = usage_row(rec, 2, 99)
    assert len(row) == len(USAGE_COLUMNS)
    values = dict(zip(USAGE_COLUMNS, row, strict=True))
    assert values["model"] == "" and values["occurred_at"] == 1_700_000_000_123
    assert (values["kafka_partition"], values["kafka_offset"]) == (2, 99)
    with pytest.raises(RowError):
        usage_row({"event_id": "e1"}, 0, 0)


def test_ledger_row_flattens_grant_terms_and_allocations() -> None:
    rec = {
        "entry_id": "x:GRANT_CREATED",
        "account_id": "a",
        "seq": 1,
        "type": "GRANT_CREATED",
        "amount": 5_000_000,
        "allocations": [{"grant_id": "g1", "amount": 5}],
        "balance_after": 5_000_000,
        "overage_after": 0,
        "cause_id": "x",
        "occurred_at": 1,
        "recorded_at": 2,
        "period_start": 0,
        "period_end": 9,
        "grant": {
            "grant_id": "g1",
            "source": "plan",
            "amount": 5,
            "priority": 1,
            "effective_at": 1,
            "expires_at": None,
            "cost_basis_micros": None,
        },
        "terms": {
            "plan_id": "pro",
            "overage_policy": "allow",
            "overage_limit": 1,
            "features": None,
            "monthly_credits": 10,
        },
    }
    values = dict(zip(LEDGER_COLUMNS, ledger_row(rec, 0, 1), strict=True))
    assert values["allocations.grant_id"] == ["g1"]
    assert values["allocations.amount"] == [5]
    assert values["grant_id"] == "g1" and values["grant_priority"] == 1
    assert values["terms_features"] == [] and values["terms_features_restricted"] is False
    assert values["subject"] == "" and values["price_version"] == ""


_CODE_START = re.compile(r"^(?:\s*--[^\n]*\n)*\s*", re.MULTILINE)
_INSERT_INTO = re.compile(r"^INSERT INTO (\w+)")
_TRUNCATE = re.compile(r"^TRUNCATE TABLE IF EXISTS (\w+)")
_STREAM_TARGETS = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS \w+ TO (\w+) AS\s+SELECT.*?FROM (\w+)", re.S
)


def test_migrations_are_ordered_and_split_into_statements() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    for migration in migrations:
        truncated: set[str] = set()
        feeds: dict[str, set[str]] = {}  # source table -> tables its views write to
        for statement in migration.statements():
            assert not statement.rstrip().endswith(";")
            code = _CODE_START.sub("", statement, count=1)
            # Re-runnable, so a migration interrupted halfway is simply applied again.
            if code.startswith("CREATE"):
                assert "IF NOT EXISTS" in code.split("(", 1)[0].split(" AS", 1)[0], code[:80]
            elif code.startswith("DROP"):
                assert code.startswith(("DROP VIEW IF EXISTS", "DROP TABLE IF EXISTS")), code
            elif code.startswith("ALTER"):
                assert "ADD COLUMN IF NOT EXISTS" in code, code[:80]
            elif (match := _TRUNCATE.match(code)) is not None:
                truncated.add(match[1])
            else:
                # A backfill lands only in tables emptied earlier in the same migration.
                match = _INSERT_INTO.match(code)
                assert match is not None, code[:80]
                targets = feeds.get(match[1], {match[1]})
                assert targets <= truncated, (match[1], targets, truncated)
            if (view := _STREAM_TARGETS.match(code)) is not None:
                feeds.setdefault(view[2], set()).add(view[1])


def test_migration_0003_backfill_matches_its_views() -> None:
    """Each backfill runs the exact query of a view writing to the same table."""
    migration = next(m for m in load_migrations() if m.version == 3)
    views: set[tuple[str, str]] = set()
    inserts: list[tuple[str, str]] = []
    for statement in migration.statements():
        code = _CODE_START.sub("", statement, count=1)
        view = re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS \w+ TO (\w+) AS\n", code)
        insert = re.match(r"INSERT INTO (\w+)\n", code)
        if view is not None:
            views.add((view[1], code[view.end() :]))
        elif insert is not None:
            inserts.append((insert[1], code[insert.end() :]))
    assert [t for t, _ in inserts] == [
        "usage_daily_totals",
        "usage_event_balance",
        "ledger_usage_stream",
    ]
    assert all(insert in views for insert in inserts)


def test_format_credits_is_exact() -> None:
    assert format_credits(1_500_000) == "1.500000"
    assert format_credits(-1) == "-0.000001"
    assert format_credits(12_345_000_000) == "12,345.000000"


def test_render_formats() -> None:
    rows = [{"key": "design", "credits": 2_000_000, "events": 3, "units": {"requests": 3}}]
    assert '"credits": 2000000' in render(rows, "json", "t")
    assert render(rows, "csv", "t").splitlines()[0] == "key,credits,events,units"
    assert "2.000000" in render(rows, "table", "t")
