"""The specialised UsageEvent encoder writes exactly fastavro's bytes."""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.avro import USAGE_EVENT, load_catalog
from metering.avro.schemas import strip_int_logical_types
from metering.avro.usage_encoder import (
    USAGE_EVENT_SHAPE,
    encode_long,
    make_usage_event_encoder,
    record_shape,
)

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


def test_shape_matches_the_committed_schema() -> None:
    """If this fails, the .avsc changed: update the encoder (the codec falls back meanwhile)."""
    schema = load_catalog().get(USAGE_EVENT).schema
    assert record_shape(strip_int_logical_types(schema)) == USAGE_EVENT_SHAPE


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
