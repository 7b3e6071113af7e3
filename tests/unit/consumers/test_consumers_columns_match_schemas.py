"""ClickHouse columns come from the .avsc; the row builders and the tables must agree with them.

The column lists are derived from the schemas; the row builders are written out (per record),
so these tests put a distinct value in every schema field and check it lands in its column.
The tables come from the migrations (not this code's to change): the derived columns must be
exactly their insertable columns, so a schema edit that needs a migration fails here.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import fastavro

from consumers.migrations import load_migrations
from consumers.native_avro import HEADER_FIELD, NativeAvro
from consumers.rows import (
    LEDGER_COLUMNS,
    LEDGER_EXTRA,
    LEDGER_SOURCES,
    POSITION_COLUMNS,
    USAGE_COLUMNS,
    USAGE_SOURCES,
    ledger_row,
    usage_row,
)
from metering.avro import LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
from metering.avro.fields import Field, field_names, record_fields


def _insertable_columns(table: str) -> tuple[str, ...]:
    """The table's columns without a DEFAULT, ``Nested`` ones as ``name.sub``."""
    sql = "\n".join(m.sql for m in load_migrations())
    assert f"ALTER TABLE {table}" not in sql, "teach this test about the ALTER"
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table}\s*\((.*?)\n\)\s*ENGINE", sql, re.S)
    assert body is not None
    columns: list[str] = []
    for line in body[1].splitlines():
        line = line.strip().rstrip(",")
        if not line or line.startswith("--") or " DEFAULT " in line:
            continue
        name, kind = line.split(None, 1)
        nested = re.match(r"Nested\((.*)\)", kind)
        if nested is None:
            columns.append(name)
        else:
            columns.extend(f"{name}.{part.split()[0]}" for part in nested[1].split(","))
    return tuple(columns)


def test_usage_columns_are_the_schema_fields_then_the_kafka_position() -> None:
    assert (*field_names(USAGE_EVENT), *POSITION_COLUMNS) == USAGE_COLUMNS
    assert [path for _, path in USAGE_SOURCES] == list(field_names(USAGE_EVENT))


def test_ledger_columns_flatten_the_schema_with_the_documented_exceptions() -> None:
    assert LEDGER_COLUMNS[-2:] == POSITION_COLUMNS
    assert [c for c, _ in LEDGER_SOURCES] == list(LEDGER_COLUMNS[:-2])
    assert dict(LEDGER_SOURCES)["grant_id"] == "grant.grant_id"
    assert dict(LEDGER_SOURCES)["allocations.amount"] == "allocations.amount"
    assert dict(LEDGER_SOURCES)["terms_features_restricted"] == "terms.features"
    # Every schema field (nested ones by path) feeds at least one column, in schema order.
    top = [path.split(".")[0] for _, path in LEDGER_SOURCES]
    assert list(dict.fromkeys(top)) == list(field_names(LEDGER_ENTRY))


def test_columns_are_the_insertable_columns_of_the_history_tables() -> None:
    assert _insertable_columns("usage_events") == USAGE_COLUMNS
    assert _insertable_columns("ledger_entries") == LEDGER_COLUMNS


def _sample(t: Any, path: str, n: Iterator[int]) -> Any:
    """A distinct non-null value of type ``t`` (from the normalised schema)."""
    if isinstance(t, list):
        return _sample(next(b for b in t if b != "null"), path, n)
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "record":
            return _record(t["fields"], f"{path}.", n)
        if kind == "array":
            return [_sample(t["items"], path, n)]
        if kind == "map":
            return {f"k:{path}": _sample(t["values"], path, n)}
        return f"v:{path}"  # enum: the row builders pass symbols through
    return next(n) if t in ("int", "long") else True if t == "boolean" else f"v:{path}"


def _record(fields: tuple[Field, ...], prefix: str, n: Iterator[int]) -> dict[str, Any]:
    return {f.name: _sample(f.type, f"{prefix}{f.name}", n) for f in fields}


def _at(rec: dict[str, Any], path: str) -> Any:
    top, _, sub = path.partition(".")
    value = rec[top]
    if not sub:
        return value
    return [item[sub] for item in value] if isinstance(value, list) else value[sub]


def test_usage_row_puts_each_field_in_its_column() -> None:
    rec = _record(record_fields(USAGE_EVENT), "", itertools.count(1))
    values = dict(zip(USAGE_COLUMNS, usage_row(rec, 7, 8), strict=True))
    for column, path in USAGE_SOURCES:
        assert values[column] == _at(rec, path), column
    assert [values[c] for c in POSITION_COLUMNS] == [7, 8]


def test_ledger_row_puts_each_field_in_its_column() -> None:
    rec = _record(record_fields(LEDGER_ENTRY), "", itertools.count(1))
    values = dict(zip(LEDGER_COLUMNS, ledger_row(rec, 7, 8), strict=True))
    computed = {c for extra in LEDGER_EXTRA.values() for c in extra}
    for column, path in LEDGER_SOURCES:
        if column in computed:
            assert values[column] is True, column  # features set: restricted to them
        else:
            assert values[column] == _at(rec, path), column
    assert [values[c] for c in POSITION_COLUMNS] == [7, 8]


def test_the_native_container_fields_are_the_usage_columns() -> None:
    """ClickHouse maps the container's fields to USAGE_COLUMNS by name: they must match."""
    registry = load_registry()
    codec = AvroCodec(registry, USAGE_EVENT)
    native = NativeAvro(registry, USAGE_EVENT)
    value = codec.encode(
        {"event_id": "e", "account_id": "a", "feature": "f", "units": {}, "occurred_at": 1}
    )
    schema_id = native.schema_id(value)
    data = native.container(schema_id, [native.records(0, [value], [5])])
    reader = fastavro.reader(io.BytesIO(data))
    fields = json.loads(reader.metadata["avro.schema"])["fields"]
    assert [f["name"] for f in fields] == [HEADER_FIELD, *USAGE_COLUMNS]
