"""Field lists come from the committed .avsc, normalised to what hand-written codecs depend on."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from metering.avro import LEDGER_ENTRY, SUBJECTS, USAGE_EVENT, RegisteredSchema, load_catalog
from metering.avro.fields import (
    REQUIRED,
    Field,
    enum_type,
    field_names,
    first_difference,
    fits_shape,
    nested_fields,
    record_fields,
    record_type,
    shape,
)
from metering.avro.schemas import parse
from schemas import SCHEMA_DIR


def _registered(schema: dict[str, Any], schema_id: int) -> RegisteredSchema:
    return RegisteredSchema(schema_id, "io.metering.Thing", None, schema, parse(schema))


@pytest.mark.parametrize("entry", load_catalog().all(), ids=lambda e: f"{e.subject}-v{e.version}")
def test_field_names_are_the_avsc_file_order(entry: RegisteredSchema) -> None:
    rows = json.loads((SCHEMA_DIR / "registry.json").read_text())["schemas"]
    (file,) = (r["file"] for r in rows if r["id"] == entry.schema_id)
    raw = json.loads((SCHEMA_DIR / file).read_text())
    assert field_names(entry.subject, entry.version) == tuple(f["name"] for f in raw["fields"])


def test_every_subject_has_fields_and_latest_is_the_default() -> None:
    catalog = load_catalog()
    for subject in SUBJECTS:
        assert record_fields(subject) == shape(catalog.get(subject).schema)
        assert record_fields(subject) is record_fields(subject)  # cached


def test_nested_records_are_found_by_full_name() -> None:
    grant = record_fields("io.metering.GrantInfo")
    assert [f.name for f in grant][:2] == ["grant_id", "source"]
    (grant_field,) = (f for f in record_fields(LEDGER_ENTRY) if f.name == "grant")
    assert nested_fields(grant_field.type) == grant
    (allocations,) = (f for f in record_fields(LEDGER_ENTRY) if f.name == "allocations")
    assert nested_fields(allocations.type) == record_fields("io.metering.Allocation")
    assert field_names("io.metering.AutoTopupConfig")[0] == "enabled"
    with pytest.raises(KeyError, match="no committed record"):
        record_fields("io.metering.Nope")
    with pytest.raises(KeyError):
        record_fields("io.metering.GrantInfo", 1)


def test_shape_strips_what_hand_written_codecs_do_not_depend_on() -> None:
    schema = {
        "type": "record",
        "name": "Thing",
        "namespace": "io.metering",
        "doc": "dropped",
        "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "maybe", "type": ["null", "string"], "default": None, "doc": "dropped"},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "Inner",
                    "fields": [{"name": "n", "type": "int", "default": 3}],
                },
            },
            {"name": "again", "type": "Inner"},
        ],
    }
    assert shape(schema) == (
        Field("at", "long"),
        Field("maybe", ["null", "string"], None),
        Field("kind", enum_type("io.metering.Kind")),
        Field("inner", record_type("io.metering.Inner", Field("n", "int", 3))),
        Field("again", "io.metering.Inner"),
    )
    assert shape(schema)[0].required and not shape(schema)[1].required
    assert shape(schema)[0].default is REQUIRED  # a missing default is not a null default


def test_first_difference_names_the_first_differing_field() -> None:
    base = (Field("a", "string"), Field("b", ["null", "long"], None))
    assert first_difference(base, base) is None
    assert first_difference(base, base[::-1]) == "field 0 is 'b', expected 'a'"
    assert first_difference(base, (*base, Field("c", "int"))) == "unexpected field 'c'"
    assert first_difference(base, base[:1]) == "missing field 'b'"
    assert first_difference(base, (base[0], Field("b", "long"))) == (
        "field 'b' is ('long', REQUIRED), expected (['null', 'long'], None)"
    )
    nested = (Field("g", ["null", record_type("G", Field("x", "int"), Field("y", "int"))], None),)
    drifted = (Field("g", ["null", record_type("G", Field("x", "int"), Field("z", "int"))], None),)
    assert first_difference(nested, drifted) == "field 1 is 'g.z', expected 'g.y'"


def test_fits_shape_warns_once_per_hot_path_and_schema(caplog: pytest.LogCaptureFixture) -> None:
    schema = {"type": "record", "name": "Thing", "fields": [{"name": "b", "type": "int"}]}
    expected = (Field("a", "int"),)
    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        assert not fits_shape(expected, _registered(schema, 9001), "test path")
        assert not fits_shape(expected, _registered(schema, 9001), "test path")
        assert fits_shape(shape(schema), _registered(schema, 9001), "test path")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "io.metering.Thing (schema id 9001)" in message
    assert "test path" in message and "field 0 is 'b', expected 'a'" in message


def test_usage_event_is_ten_plain_fields() -> None:
    fields = record_fields(USAGE_EVENT)
    assert len(fields) == 10
    assert all(nested_fields(f.type) is None for f in fields)
