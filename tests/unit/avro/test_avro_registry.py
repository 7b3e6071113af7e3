"""The file-backed registry's stable ids, and the Confluent adapter's caching and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from metering.avro import (
    CREDIT_ALERT,
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    USAGE_EVENT,
    AvroCodec,
    ConfluentSchemaRegistry,
    FileSchemaRegistry,
    SchemaCatalog,
    UnknownSchemaIdError,
    load_catalog,
    load_registry,
)
from metering.config import load_settings
from schemas import SCHEMA_DIR


def test_ids_are_stable() -> None:
    """Changing these breaks every record already on a topic: never renumber."""
    catalog = load_catalog()
    assert catalog.get(USAGE_EVENT, 1).schema_id == 1
    assert catalog.get(CREDIT_COMMAND, 1).schema_id == 2
    assert catalog.get(LEDGER_ENTRY, 1).schema_id == 3
    assert catalog.get(CREDIT_ALERT, 1).schema_id == 4
    assert catalog.get(CREDIT_ALERT, 2).schema_id == 5  # v2: the UNKNOWN_FEATURE kind


def test_every_avsc_file_is_registered_exactly_once() -> None:
    rows = json.loads((SCHEMA_DIR / "registry.json").read_text())["schemas"]
    files = sorted(row["file"] for row in rows)
    assert files == sorted(p.name for p in SCHEMA_DIR.glob("*.avsc"))
    assert len({row["id"] for row in rows}) == len(rows)


def test_default_registry_is_file_backed_and_url_selects_confluent() -> None:
    assert isinstance(load_registry(), FileSchemaRegistry)
    assert isinstance(load_registry(load_settings({})), FileSchemaRegistry)
    settings = load_settings({"METERING_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1"})
    assert isinstance(load_registry(settings), ConfluentSchemaRegistry)


def _write_registry(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    for row in rows:
        source = SCHEMA_DIR / "usage_event.v1.avsc"
        (tmp_path / row["file"]).write_text(source.read_text())
    (tmp_path / "registry.json").write_text(json.dumps({"schemas": rows}))
    return tmp_path


def test_catalog_rejects_duplicate_ids_and_version_gaps(tmp_path: Path) -> None:
    row = {"subject": USAGE_EVENT, "file": "a.avsc"}
    with pytest.raises(ValueError, match="duplicated"):
        SchemaCatalog(
            _write_registry(
                tmp_path, [{**row, "id": 1, "version": 1}, {**row, "id": 1, "version": 2}]
            )
        )
    with pytest.raises(ValueError, match=r"versions must be 1\.\.n"):
        SchemaCatalog(_write_registry(tmp_path, [{**row, "id": 1, "version": 2}]))
    with pytest.raises(ValueError, match=r"defines io\.metering\.UsageEvent"):
        SchemaCatalog(
            _write_registry(
                tmp_path, [{"id": 1, "version": 1, "subject": LEDGER_ENTRY, "file": "a.avsc"}]
            )
        )


def test_unknown_id_in_file_registry_names_the_file() -> None:
    with pytest.raises(UnknownSchemaIdError, match=r"unknown schema id 77 .*registry.json"):
        load_registry().by_id(77)


class _SchemaRegistryClientStandIn:
    """Just enough of SchemaRegistryClient's API to exercise the adapter (no HTTP here)."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.calls = 0

    def register_schema(self, subject: str, schema: Any) -> int:
        self.calls += 1
        for schema_id, text in self.schemas.items():
            if text == schema.schema_str:
                return schema_id
        schema_id = 100 + len(self.schemas)
        self.schemas[schema_id] = schema.schema_str
        return schema_id

    def get_schema(self, schema_id: int) -> Any:
        self.calls += 1
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, "Schema not found")

        class _Schema:
            schema_str = self.schemas[schema_id]

        return _Schema()


def test_confluent_registry_registers_once_and_round_trips() -> None:
    client = _SchemaRegistryClientStandIn()
    registry = ConfluentSchemaRegistry("http://sr:8081", load_catalog(), client=client)
    writer = AvroCodec(registry, USAGE_EVENT)
    assert writer.schema_id == 100
    assert AvroCodec(registry, USAGE_EVENT).schema_id == 100
    assert client.calls == 1
    data = writer.encode(
        {
            "event_id": "e",
            "account_id": "a",
            "feature": "f",
            "units": {"requests": 1},
            "occurred_at": 1_700_000_000_000,
        }
    )
    # A fresh registry (another process) learns id 100 from the server, then caches it.
    reader_registry = ConfluentSchemaRegistry("http://sr:8081", load_catalog(), client=client)
    reader = AvroCodec(reader_registry, USAGE_EVENT)
    assert reader.decode(data)["units"] == {"requests": 1}
    calls = client.calls
    reader_registry.by_id(100)
    assert client.calls == calls
    with pytest.raises(UnknownSchemaIdError, match=r"unknown schema id 5 .*sr:8081"):
        reader_registry.by_id(5)
