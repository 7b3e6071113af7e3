"""How the sink's batches become ClickHouse inserts: the route of each source topic (table,
columns, row builder, decoder), native Avro parts (ClickHouse decodes the records itself),
and the inserts, each with its deduplication token so a replayed batch is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from consumers.batching import Batch
from consumers.native_avro import NativeAvro
from consumers.rows import LEDGER_COLUMNS, USAGE_COLUMNS, ledger_row, usage_row
from metering.avro.schemas import full_name
from metering.topics import TopicNames

log = logging.getLogger("metering.sink")

Decoder = Callable[[bytes], Mapping[str, Any]]
RowBuilder = Callable[[Mapping[str, Any], int, int], tuple[Any, ...]]
SlowDecoder = Callable[["Route", str, int, list[bytes], list[int]], list[tuple[Any, ...]]]

INSERT_SETTINGS: dict[str, Any] = {
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


@dataclass(frozen=True, slots=True)
class Route:
    """Where one source topic's records go."""

    table: str
    columns: tuple[str, ...]
    build: RowBuilder
    decode: Decoder
    native: NativeAvro | None = None
    """When set, rows are the raw message values (framing checked) for ClickHouse to decode."""


@dataclass(frozen=True, slots=True)
class NativePart:
    """One Avro insert of a native batch: the records of one writer schema, ready to send."""

    token: str
    schema_id: int
    values: list[bytes]
    offsets: list[int]
    container: bytes


def default_decoders(topics: TopicNames) -> tuple[dict[str, Decoder], NativeAvro]:
    """The project's Avro codec, one per source topic, and native loading for usage events."""
    from metering.avro import LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
    from metering.config import load_settings

    registry = load_registry(load_settings())
    usage = AvroCodec(registry, USAGE_EVENT)
    decoders: dict[str, Decoder] = {
        topics.usage_events: usage.decode,
        topics.credit_ledger: AvroCodec(registry, LEDGER_ENTRY).decode,
    }
    return decoders, NativeAvro(registry, full_name(usage.writer.schema))


def routes_for(
    topics: TopicNames, decoders: Mapping[str, Decoder], native_usage: NativeAvro | None = None
) -> dict[str, Route]:
    return {
        topics.usage_events: Route(
            "usage_events",
            USAGE_COLUMNS,
            usage_row,
            decoders[topics.usage_events],
            native_usage,
        ),
        topics.credit_ledger: Route(
            "ledger_entries",
            LEDGER_COLUMNS,
            ledger_row,
            decoders[topics.credit_ledger],
        ),
    }


def prepare_native(route: Route, batch: Batch) -> list[NativePart]:
    """The Avro payloads of a native batch (one per writer schema); [] for other routes."""
    native = route.native
    if native is None or not batch.rows:
        return []
    values: list[bytes] = batch.rows
    head = values[0][:5]
    groups: dict[bytes, tuple[list[bytes], list[int]]]
    if all(v.startswith(head) for v in values):
        groups = {head: (values, batch.offsets)}
    else:
        groups = {}
        for value, offset in zip(values, batch.offsets, strict=True):
            group = groups.setdefault(value[:5], ([], []))
            group[0].append(value)
            group[1].append(offset)
    parts = []
    for header, (group_values, group_offsets) in sorted(groups.items()):
        schema_id = int.from_bytes(header[1:5], "big")
        data = native.records(batch.partition, group_values, group_offsets)
        parts.append(
            NativePart(
                batch.token if len(groups) == 1 else f"{batch.token}#{schema_id}",
                schema_id,
                group_values,
                group_offsets,
                native.container_of(schema_id, len(group_values), data),
            )
        )
    return parts


def insert_rows(client: Client, route: Route, rows: list[tuple[Any, ...]], token: str) -> None:
    if not rows:
        return
    client.insert(
        route.table,
        list(zip(*rows, strict=True)),
        column_names=list(route.columns),
        column_oriented=True,
        settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
    )


def insert_native(
    client: Client,
    route: Route,
    batch: Batch,
    parts: list[NativePart],
    decode_slowly: SlowDecoder,
) -> int:
    """One Avro insert per writer schema in the batch; returns the rows inserted. A part
    ClickHouse cannot parse is decoded by ``decode_slowly``, which skips the bad records."""
    inserted = 0
    for part in parts:
        try:
            client.raw_insert(
                route.table,
                column_names=list(route.columns),
                insert_block=part.container,
                fmt="Avro",
                settings={**INSERT_SETTINGS, "insert_deduplication_token": part.token},
            )
            inserted += len(part.values)
        except DatabaseError as exc:
            # Same records, same token, same outcome on a replay: still deterministic.
            log.warning("native Avro insert of %s failed, decoding in Python: %s", part.token, exc)
            rows = decode_slowly(route, batch.topic, batch.partition, part.values, part.offsets)
            insert_rows(client, route, rows, part.token)
            inserted += len(rows)
    return inserted
