"""The sink's Avro container: what ClickHouse reads must be exactly the messages plus position."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.native_avro import NativeAvro
from metering.avro import USAGE_EVENT, AvroCodec, load_registry
from metering.avro.varint import encode_long, encode_offset

REGISTRY = load_registry()
CODEC = AvroCodec(REGISTRY, USAGE_EVENT)


@given(st.integers(min_value=0, max_value=2**62))
def test_encode_offset_is_the_avro_long_encoding(n: int) -> None:
    assert encode_offset(n) == encode_long(n)


def _event(i: int) -> dict[str, object]:
    return {
        "event_id": f"ev-{i}",
        "account_id": f"acct-{i % 7}",
        "feature": "text_generation",
        "units": {"input_tokens": i},
        "occurred_at": 1_764_547_200_000 + i,
    }


@given(
    st.integers(min_value=0, max_value=5000),
    st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=40),
)
def test_the_container_holds_each_message_with_its_partition_and_offset(
    partition: int, offsets: list[int]
) -> None:
    native = NativeAvro(REGISTRY, USAGE_EVENT)
    values = [CODEC.encode(_event(i)) for i in range(len(offsets))]
    schema_id = native.schema_id(values[0])
    data = native.records(partition, values, offsets)
    assert data == b"".join(
        v + encode_long(partition) + encode_long(o) for v, o in zip(values, offsets, strict=True)
    )
    rows = list(fastavro.reader(io.BytesIO(native.container_of(schema_id, len(values), data))))
    assert [(r["event_id"], r["kafka_partition"], r["kafka_offset"]) for r in rows] == [
        (f"ev-{i}", partition, o) for i, o in enumerate(offsets)
    ]
    assert all(r["_confluent_header"] == values[0][:5] for r in rows)


def test_records_refuses_values_and_offsets_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="2 values but 1 offsets"):
        NativeAvro.records(0, [b"a", b"b"], [1])
