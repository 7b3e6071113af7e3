"""BACKWARD compatibility across every version of every schema, plus the checker itself."""

from __future__ import annotations

import copy
import io
import itertools
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from metering.avro import SUBJECTS, USAGE_EVENT, load_catalog
from metering.avro.compat import backward_problems

CATALOG = load_catalog()


@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_version_reads_every_older_version(subject: str) -> None:
    """Structural check for every (older writer, newer reader) pair, not just neighbours."""
    versions = CATALOG.versions(subject)
    assert versions, subject
    for old, new in itertools.combinations_with_replacement(versions, 2):
        assert backward_problems(new.schema, old.schema) == [], (old.version, new.version)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_data_written_with_each_version_decodes_with_each_newer_one(subject: str) -> None:
    versions = CATALOG.versions(subject)
    for old, new in itertools.combinations_with_replacement(versions, 2):
        for record in generate_many(old.parsed, 30):
            buf = io.BytesIO()
            schemaless_writer(buf, old.parsed, record)
            buf.seek(0)
            decoded = schemaless_reader(buf, old.parsed, new.parsed)
            assert isinstance(decoded, dict)
            shared = {f["name"] for f in new.schema["fields"]} & set(record)
            assert {k: decoded[k] for k in shared} == {k: record[k] for k in shared}


def _usage() -> dict[str, Any]:
    return copy.deepcopy(CATALOG.get(USAGE_EVENT).schema)


def test_checker_accepts_a_new_field_with_a_default() -> None:
    new = _usage()
    new["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    assert backward_problems(new, _usage()) == []


def test_checker_rejects_a_new_field_without_a_default() -> None:
    new = _usage()
    new["fields"].append({"name": "region", "type": "string"})
    assert backward_problems(new, _usage()) == ["region: new field without a default"]


def test_checker_accepts_a_removed_field_and_promotions() -> None:
    old = _usage()
    old["fields"].append({"name": "count", "type": "int"})
    new = _usage()
    new["fields"].append({"name": "count", "type": "long"})
    assert backward_problems(new, old) == []
    del new["fields"][-1]  # reader ignores a field the writer has
    assert backward_problems(new, old) == []


def test_checker_rejects_type_changes() -> None:
    new = _usage()
    new["fields"][0]["type"] = "long"  # event_id string -> long
    assert backward_problems(new, _usage()) == ["event_id: type changed from string to long"]
    new = _usage()
    new["fields"][5]["type"] = {"type": "map", "values": "int"}  # units long -> int
    assert backward_problems(new, _usage()) == ["units{}: type changed from long to int"]


def test_checker_handles_unions_and_enums() -> None:
    commands = CATALOG.get("io.metering.CreditCommand").schema
    new = copy.deepcopy(commands)
    kind = next(f for f in new["fields"] if f["name"] == "kind")
    kind["type"]["symbols"].append("refund")  # adding a symbol is fine for readers
    assert backward_problems(new, commands) == []
    kind["type"]["symbols"].remove("grant")  # removing one breaks old data
    assert any("symbols removed" in p for p in backward_problems(new, commands))
    new = copy.deepcopy(commands)
    amount = next(f for f in new["fields"] if f["name"] == "amount")
    amount["type"] = "long"  # a null in old data has nowhere to go
    assert any("reader" in p or "type" in p for p in backward_problems(new, commands))
    amount["type"] = ["null", "long", "string"]  # widening a union is fine
    assert backward_problems(new, commands) == []
