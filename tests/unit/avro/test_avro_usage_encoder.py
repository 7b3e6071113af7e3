"""The specialised UsageEvent encoder writes exactly fastavro's bytes."""

from __future__ import annotations

import copy
import io
import logging
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.avro import USAGE_EVENT, AvroCodec, RegisteredSchema, load_catalog, load_registry
from metering.avro.fields import first_difference, record_fields
from metering.avro.schemas import parse
from metering.avro.usage_encoder import USAGE_EVENT_SHAPE, encode_long, make_usage_event_encoder

PARSED = load_catalog().get(USAGE_EVENT).parsed
LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=40)


def fastavro_bytes(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, PARSED, record)
    return buf.getvalue()


@st.composite
def usage_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": draw(TEXT),
        "account_id": draw(st.sampled_from(["acct-1", "acct-2", "ü-账户"]) | TEXT),
        "feature": draw(TEXT),
        "units": draw(st.dictionaries(TEXT, LONGS | st.integers(0, 10_000), max_size=6)),
        "occurred_at": draw(LONGS),
    }
    optional = {
        "subject": TEXT,
        "model": st.none() | TEXT,
        "source": TEXT,
        "attributes": st.dictionaries(TEXT, TEXT, max_size=6),
        "reservation_id": st.none() | TEXT,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            event[name] = draw(strategy)
    return event


def test_usage_event_shape_is_the_committed_schema() -> None:
    """If this fails, the .avsc changed: update the hand-unrolled UsageEvent codecs (encoder,
    ``pipeline.fast_avro`` decoder, SDK fast path) and their shape; until then they fall back."""
    committed = record_fields(USAGE_EVENT)
    assert first_difference(USAGE_EVENT_SHAPE, committed) is None
    assert committed == USAGE_EVENT_SHAPE


@settings(max_examples=400, deadline=None)
@given(usage_events())
def test_bytes_equal_fastavro(event: dict[str, Any]) -> None:
    encode = make_usage_event_encoder()
    assert encode(event) == fastavro_bytes(event)
    assert encode(event) == fastavro_bytes(event)  # second time from the caches


def test_header_is_prepended() -> None:
    event = {"event_id": "e", "account_id": "a", "feature": "f", "units": {}, "occurred_at": 1}
    assert make_usage_event_encoder(b"HDR")(event) == b"HDR" + fastavro_bytes(event)


@given(LONGS)
def test_long_encoding_equals_fastavro(n: int) -> None:
    buf = io.BytesIO()
    schemaless_writer(buf, "long", n)
    assert encode_long(n) == buf.getvalue()


class OneSchema:
    """A registry whose only schema is ``schema`` (a drifted UsageEvent)."""

    def __init__(self, schema: dict[str, Any], schema_id: int) -> None:
        self.entry = RegisteredSchema(schema_id, USAGE_EVENT, None, schema, parse(schema))

    def writer_schema(self, subject: str, version: int | None = None) -> RegisteredSchema:
        return self.entry

    def by_id(self, schema_id: int) -> RegisteredSchema:
        return self.entry


def test_the_committed_schema_takes_the_fast_encoder(caplog: pytest.LogCaptureFixture) -> None:
    """Drift between the .avsc and USAGE_EVENT_SHAPE fails here, not silently in production."""
    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        codec = AvroCodec(load_registry(), USAGE_EVENT)
    assert codec.fast_encoder
    assert caplog.records == []


def test_a_drifted_schema_falls_back_to_fastavro_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = copy.deepcopy(load_catalog().get(USAGE_EVENT).schema)
    schema["fields"].insert(3, {"name": "region", "type": "string", "default": "eu"})
    registry = OneSchema(schema, 901)
    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        codecs = [AvroCodec(registry, USAGE_EVENT) for _ in range(2)]
    assert not any(codec.fast_encoder for codec in codecs)
    [warning] = caplog.records
    message = warning.getMessage()
    assert "io.metering.UsageEvent (schema id 901)" in message
    assert "UsageEvent encoder" in message and "field 3 is 'region', expected 'feature'" in message
    event = {"event_id": "e", "account_id": "a", "feature": "f", "units": {}, "occurred_at": 1}
    assert codecs[0].decode(codecs[0].encode(event))["region"] == "eu"
