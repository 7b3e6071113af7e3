"""Schema registries: which schema an id names, and which id a codec writes with.

The local ``schemas/*.avsc`` files are always the *reader* schemas (what this code was
written against). ``schemas/registry.json`` gives each (subject, version) a stable id, so
the file-backed registry needs no server and ids never change between runs or machines.
With ``METERING_SCHEMA_REGISTRY_URL`` set, ids come from a Confluent Schema Registry
instead: the local schema is registered (idempotent) and unknown ids are fetched from it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from metering.avro.errors import UnknownSchemaIdError
from metering.avro.schemas import full_name, load_schema_file, parse

if TYPE_CHECKING:
    from metering.config import Settings

REGISTRY_FILE = "registry.json"


@dataclass(frozen=True, slots=True, eq=False)
class RegisteredSchema:
    """One schema version with its id; ``parsed`` is fastavro's form (timestamps as ints)."""

    schema_id: int
    subject: str
    version: int | None
    schema: dict[str, Any]
    parsed: dict[str, Any]


class SchemaRegistry(Protocol):
    """What a codec needs from a registry."""

    def writer_schema(self, subject: str, version: int | None = None) -> RegisteredSchema:
        """The local schema (latest version unless given) with the id to frame it with."""
        ...

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The writer schema an id names; raises :class:`UnknownSchemaIdError`."""
        ...


class SchemaCatalog:
    """The local contracts listed in ``registry.json``, validated on load."""

    def __init__(self, schema_dir: Path) -> None:
        self.schema_dir = schema_dir
        index_path = schema_dir / REGISTRY_FILE
        rows = json.loads(index_path.read_text(encoding="utf-8"))["schemas"]
        self._by_id: dict[int, RegisteredSchema] = {}
        self._versions: dict[str, list[RegisteredSchema]] = {}
        for row in rows:
            schema_id, subject, version = int(row["id"]), str(row["subject"]), int(row["version"])
            if schema_id < 1 or schema_id in self._by_id:
                raise ValueError(f"{index_path}: schema id {schema_id} is invalid or duplicated")
            schema = load_schema_file(schema_dir / str(row["file"]))
            if full_name(schema) != subject:
                raise ValueError(
                    f"{index_path}: {row['file']} defines {full_name(schema)}, listed as {subject}"
                )
            entry = RegisteredSchema(schema_id, subject, version, schema, parse(schema))
            self._by_id[schema_id] = entry
            self._versions.setdefault(subject, []).append(entry)
        for subject, entries in self._versions.items():
            entries.sort(key=lambda e: e.version or 0)
            got = [e.version for e in entries]
            if got != list(range(1, len(entries) + 1)):
                raise ValueError(f"{index_path}: {subject} versions must be 1..n, got {got}")

    def subjects(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every local version of a subject, oldest first."""
        try:
            return list(self._versions[subject])
        except KeyError:
            raise KeyError(f"no local schema for subject {subject!r}") from None

    def get(self, subject: str, version: int | None = None) -> RegisteredSchema:
        entries = self.versions(subject)
        if version is None:
            return entries[-1]
        for entry in entries:
            if entry.version == version:
                return entry
        raise KeyError(f"no local version {version} of {subject!r}")

    def by_id(self, schema_id: int) -> RegisteredSchema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaIdError(schema_id, str(self.schema_dir / REGISTRY_FILE)) from None

    def all(self) -> list[RegisteredSchema]:
        """Every local schema version, by id."""
        return [self._by_id[i] for i in sorted(self._by_id)]


class FileSchemaRegistry:
    """The default registry: ids straight from the committed ``registry.json``."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog

    def writer_schema(self, subject: str, version: int | None = None) -> RegisteredSchema:
        return self.catalog.get(subject, version)

    def by_id(self, schema_id: int) -> RegisteredSchema:
        return self.catalog.by_id(schema_id)


class ConfluentSchemaRegistry:
    """A Confluent Schema Registry through confluent-kafka's client (subject = record name).

    Writing registers the local schema under its subject (the server returns the existing id
    when it is already there, and refuses an incompatible one). Reading fetches unknown ids
    once and caches them: ids are immutable in a Schema Registry.
    """

    def __init__(self, url: str, catalog: SchemaCatalog, client: Any | None = None) -> None:
        if client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            client = SchemaRegistryClient({"url": url})
        self.url = url
        self.catalog = catalog
        self._client = client
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, int | None], RegisteredSchema] = {}
        self._by_id: dict[int, RegisteredSchema] = {}

    def writer_schema(self, subject: str, version: int | None = None) -> RegisteredSchema:
        key = (subject, version)
        with self._lock:
            cached = self._writers.get(key)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry import Schema

        local = self.catalog.get(subject, version)
        schema_id = int(
            self._client.register_schema(subject, Schema(json.dumps(local.schema), "AVRO"))
        )
        entry = RegisteredSchema(schema_id, subject, local.version, local.schema, local.parsed)
        with self._lock:
            self._writers[key] = entry
            self._by_id.setdefault(schema_id, entry)
        return entry

    def by_id(self, schema_id: int) -> RegisteredSchema:
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            fetched = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaIdError(schema_id, self.url) from exc
            raise
        schema = json.loads(fetched.schema_str)
        if not isinstance(schema, dict):
            raise UnknownSchemaIdError(schema_id, f"{self.url} (not a record schema)")
        entry = RegisteredSchema(schema_id, full_name(schema), None, schema, parse(schema))
        with self._lock:
            self._by_id[schema_id] = entry
        return entry


def default_schema_dir() -> Path:
    from schemas import SCHEMA_DIR

    return SCHEMA_DIR


@lru_cache(maxsize=8)
def load_catalog(schema_dir: Path | None = None) -> SchemaCatalog:
    """Parse the local contracts once per process (they are immutable at run time)."""
    return SchemaCatalog(schema_dir or default_schema_dir())


def load_registry(
    settings: Settings | None = None, *, schema_dir: Path | None = None
) -> SchemaRegistry:
    """The file-backed registry, or a Confluent one when ``schema_registry_url`` is set."""
    catalog = load_catalog(schema_dir)
    if settings is not None and settings.schema_registry_url:
        return ConfluentSchemaRegistry(settings.schema_registry_url, catalog)
    return FileSchemaRegistry(catalog)
