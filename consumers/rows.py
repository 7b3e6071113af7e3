"""Decoded Avro records -> ClickHouse column values (pure; no I/O beyond reading the committed
schemas once at import).

The column lists are derived from ``schemas/*.avsc`` (:mod:`metering.avro.fields`): each field
is a column of the same name, a nested record's fields become ``<field>_<name>`` columns, an
array of records becomes ClickHouse ``Nested`` ``<field>.<name>`` columns, and the Kafka
position comes last. The documented exceptions are :data:`LEDGER_RENAMES` and
:data:`LEDGER_EXTRA`. The row builders stay written out (they run per record on the sink's
Python path); tests hold each builder to its columns and the columns to the tables' migrations.

Optional strings used in sort keys or rollups (model, ledger subject/feature/model,
price_version) become ``""`` so they can be keys; timestamps stay int epoch millis, which
clickhouse-connect writes straight into ``DateTime64(3)`` without datetime objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metering.avro import LEDGER_ENTRY, USAGE_EVENT
from metering.avro.fields import Field, nested_fields, record_fields

POSITION_COLUMNS: tuple[str, ...] = ("kafka_partition", "kafka_offset")
"""Where the record sat in Kafka: the last columns of each history table (and the trailing
fields of the sink's native Avro container)."""

LEDGER_RENAMES: dict[str, str] = {"grant.grant_id": "grant_id"}
"""Field path -> column where the rule would stutter (``grant_grant_id``)."""
LEDGER_EXTRA: dict[str, tuple[str, ...]] = {"terms.features": ("terms_features_restricted",)}
"""Columns computed from a field, placed after its own: ``false`` when ``features`` is null
(every feature allowed), since ``terms_features`` is a plain ``Array(String)``."""


def flat_columns(
    fields: Sequence[Field],
    renames: Mapping[str, str] | None = None,
    extra: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[tuple[str, str], ...]:
    """``(column, field path)`` per column of a record, in schema order (one level of nesting)."""
    renames, extra = renames or {}, extra or {}
    out: list[tuple[str, str]] = []
    for field in fields:
        inner = nested_fields(field.type)
        if inner is None:
            leaves = [(field.name, field.name)]
        else:
            branches = field.type if isinstance(field.type, list) else [field.type]
            nested = any(isinstance(b, dict) and b.get("type") == "array" for b in branches)
            join = "." if nested else "_"  # an array of records is a ClickHouse Nested column
            leaves = [(f"{field.name}{join}{f.name}", f"{field.name}.{f.name}") for f in inner]
        for column, path in leaves:
            out.append((renames.get(path, column), path))
            out.extend((computed, path) for computed in extra.get(path, ()))
    return tuple(out)


USAGE_SOURCES = flat_columns(record_fields(USAGE_EVENT))
"""``(column, field path)`` of each usage_events column that comes from the record."""
LEDGER_SOURCES = flat_columns(record_fields(LEDGER_ENTRY), LEDGER_RENAMES, LEDGER_EXTRA)
"""``(column, field path)`` of each ledger_entries column that comes from the record."""
USAGE_COLUMNS: tuple[str, ...] = (*(c for c, _ in USAGE_SOURCES), *POSITION_COLUMNS)
LEDGER_COLUMNS: tuple[str, ...] = (*(c for c, _ in LEDGER_SOURCES), *POSITION_COLUMNS)


class RowError(ValueError):
    """A decoded record lacks a field the table needs (treated like a poison record)."""


def usage_row(rec: Mapping[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
    """The :data:`USAGE_COLUMNS` values of a record (written out: it runs per record)."""
    try:
        return (
            rec["event_id"],
            rec["account_id"],
            rec.get("subject") or "default",
            rec["feature"],
            rec.get("model") or "",
            dict(rec["units"]),
            int(rec["occurred_at"]),
            rec.get("source") or "",
            dict(rec.get("attributes") or {}),
            rec.get("reservation_id"),
            partition,
            offset,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RowError(f"usage event missing/invalid field: {exc!r}") from exc


def ledger_row(rec: Mapping[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
    """The :data:`LEDGER_COLUMNS` values of a record (written out: it runs per record)."""
    try:
        allocations = rec.get("allocations") or []
        grant = rec.get("grant") or {}
        terms = rec.get("terms") or {}
        features = terms.get("features")
        return (
            rec["entry_id"],
            rec["account_id"],
            int(rec["seq"]),
            rec["type"],
            int(rec["amount"]),
            [a["grant_id"] for a in allocations],
            [int(a["amount"]) for a in allocations],
            int(rec["balance_after"]),
            int(rec["overage_after"]),
            rec["cause_id"],
            rec.get("subject") or "",
            rec.get("feature") or "",
            rec.get("model") or "",
            rec.get("price_version") or "",
            int(rec["occurred_at"]),
            int(rec["recorded_at"]),
            int(rec["period_start"]),
            int(rec["period_end"]),
            rec.get("reason"),
            rec.get("reservation_id"),
            grant.get("grant_id"),
            grant.get("source"),
            grant.get("amount"),
            grant.get("priority"),
            grant.get("effective_at"),
            grant.get("expires_at"),
            grant.get("cost_basis_micros"),
            terms.get("plan_id"),
            terms.get("overage_policy"),
            terms.get("overage_limit"),
            list(features or []),
            features is not None,
            terms.get("monthly_credits"),
            partition,
            offset,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RowError(f"ledger entry missing/invalid field: {exc!r}") from exc
