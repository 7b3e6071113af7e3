"""Loading ``.avsc`` contracts: parse once, timestamps stay plain ints.

Subjects follow Confluent's RecordNameStrategy (the record's full name), because topics
carry a test/bench prefix and one subject per record type keeps ids stable across them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastavro import parse_schema

USAGE_EVENT = "io.metering.UsageEvent"
CREDIT_COMMAND = "io.metering.CreditCommand"
LEDGER_ENTRY = "io.metering.LedgerEntry"
CREDIT_ALERT = "io.metering.CreditAlert"
SUBJECTS: tuple[str, ...] = (USAGE_EVENT, CREDIT_COMMAND, LEDGER_ENTRY, CREDIT_ALERT)

_INT_BASED = {"int", "long"}


def strip_int_logical_types(schema: Any) -> Any:
    """Drop ``logicalType`` from int/long types (timestamp-millis, date, ...).

    The wire bytes are identical; fastavro then hands out and accepts plain ints instead of
    ``datetime`` objects, which is what the domain code works with (epoch milliseconds).
    """
    if isinstance(schema, list):
        return [strip_int_logical_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strip_int_logical_types(v) for k, v in schema.items()}
    base = out.get("type")
    if isinstance(base, str) and base in _INT_BASED and "logicalType" in out:
        del out["logicalType"]
        return out["type"] if set(out) == {"type"} else out
    return out


def full_name(schema: dict[str, Any]) -> str:
    """The record's full name (namespace + name), i.e. its subject."""
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def load_schema_file(path: Path) -> dict[str, Any]:
    """Read an ``.avsc`` file as JSON (logical types still present)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("type") != "record":
        raise ValueError(f"{path}: top-level schema must be a record")
    return data


def parse(schema: dict[str, Any]) -> dict[str, Any]:
    """fastavro-parse a schema after stripping int logical types (no shared named types)."""
    parsed: dict[str, Any] = parse_schema(strip_int_logical_types(schema), named_schemas={})
    return parsed
