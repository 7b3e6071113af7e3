"""Decoded Avro records -> ClickHouse column values (pure; no I/O).

Optional strings used in sort keys or rollups (model, ledger subject/feature/model,
price_version) become ``""`` so they can be keys; timestamps stay int epoch millis, which
clickhouse-connect writes straight into ``DateTime64(3)`` without datetime objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

USAGE_COLUMNS: tuple[str, ...] = (
    "event_id",
    "account_id",
    "subject",
    "feature",
    "model",
    "units",
    "occurred_at",
    "source",
    "attributes",
    "reservation_id",
    "kafka_partition",
    "kafka_offset",
)

LEDGER_COLUMNS: tuple[str, ...] = (
    "entry_id",
    "account_id",
    "seq",
    "type",
    "amount",
    "allocations.grant_id",
    "allocations.amount",
    "balance_after",
    "overage_after",
    "cause_id",
    "subject",
    "feature",
    "model",
    "price_version",
    "occurred_at",
    "recorded_at",
    "period_start",
    "period_end",
    "reason",
    "reservation_id",
    "grant_id",
    "grant_source",
    "grant_amount",
    "grant_priority",
    "grant_effective_at",
    "grant_expires_at",
    "grant_cost_basis_micros",
    "terms_plan_id",
    "terms_overage_policy",
    "terms_overage_limit",
    "terms_features",
    "terms_features_restricted",
    "terms_monthly_credits",
    "kafka_partition",
    "kafka_offset",
)


class RowError(ValueError):
    """A decoded record lacks a field the table needs (treated like a poison record)."""


def usage_row(rec: Mapping[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
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
