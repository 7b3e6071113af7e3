"""Codec framing, round trips for every schema version, and the typed decode errors."""

from __future__ import annotations

import contextlib
import io
import random
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.utils import generate_many

from metering.avro import (
    CREDIT_ALERT,
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    SUBJECTS,
    USAGE_EVENT,
    AvroCodec,
    BadMagicByteError,
    CodecError,
    SchemaMismatchError,
    TruncatedPayloadError,
    UnknownSchemaIdError,
    frame_header,
    load_catalog,
    load_registry,
)


def usage_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "account_id": "acct-1",
        "subject": "design",
        "feature": "text_generation",
        "model": "gpt-large",
        "units": {"input_tokens": 1200, "output_tokens": 300},
        "occurred_at": 1_767_225_600_123,
        "source": "svc",
        "attributes": {"region": "eu"},
        "reservation_id": None,
    }
    event.update(overrides)
    return event


def test_constants_are_the_record_full_names() -> None:
    assert SUBJECTS == (USAGE_EVENT, CREDIT_COMMAND, LEDGER_ENTRY, CREDIT_ALERT)
    assert USAGE_EVENT == "io.metering.UsageEvent"


def test_framing_is_confluent_wire_format() -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    data = codec.encode(usage_event())
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == codec.schema_id == 1
    assert data[:5] == frame_header(1)


def test_usage_event_round_trip_keeps_ints_and_fills_defaults() -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    event = usage_event()
    del event["subject"], event["source"], event["attributes"]
    decoded = codec.decode(codec.encode(event))
    assert decoded["subject"] == "default"
    assert decoded["source"] == ""
    assert decoded["attributes"] == {}
    assert type(decoded["occurred_at"]) is int
    assert decoded["occurred_at"] == 1_767_225_600_123


@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_schema_round_trips_generated_records(subject: str) -> None:
    registry = load_registry()
    codec = AvroCodec(registry, subject)
    stripped = load_catalog().get(subject).parsed
    for record in generate_many(stripped, 50):
        assert codec.decode(codec.encode(record)) == record


def test_timestamps_are_plain_ints_in_ledger_entries() -> None:
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    entry = {
        "entry_id": "x",
        "account_id": "a",
        "seq": 1,
        "type": "USAGE_DEBIT",
        "amount": -5,
        "allocations": [{"grant_id": "g", "amount": -5}],
        "balance_after": 10,
        "overage_after": 0,
        "cause_id": "e",
        "occurred_at": 1,
        "recorded_at": 2,
        "period_start": 3,
        "period_end": 4,
    }
    decoded = codec.decode(codec.encode(entry))
    assert [decoded[k] for k in ("occurred_at", "recorded_at", "period_start")] == [1, 2, 3]
    assert decoded["type"] == "USAGE_DEBIT"


def test_fast_usage_encoder_is_used_and_matches_fastavro() -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    assert codec.encode_unchecked is not codec._generic_encoder()
    buf = io.BytesIO()
    buf.write(codec.header)
    event = usage_event()
    schemaless_writer(buf, codec.writer.parsed, event)
    assert codec.encode(event) == buf.getvalue()


def test_bad_magic_byte_names_the_byte() -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    data = bytearray(codec.encode(usage_event()))
    data[0] = 0x7B  # e.g. a JSON payload
    with pytest.raises(BadMagicByteError, match=r"magic byte.*0x7b"):
        codec.decode(bytes(data))


def test_unknown_schema_id_names_the_id() -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    data = frame_header(9999) + codec.encode(usage_event())[5:]
    with pytest.raises(UnknownSchemaIdError, match="unknown schema id 9999") as info:
        codec.decode(data)
    assert info.value.schema_id == 9999


def test_truncated_payload_at_every_cut_is_typed() -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    data = codec.encode(usage_event())
    for cut in range(len(data)):
        with pytest.raises(TruncatedPayloadError, match="truncated payload"):
            codec.decode(data[:cut])


def test_trailing_bytes_and_other_subjects_are_rejected() -> None:
    registry = load_registry()
    usage = AvroCodec(registry, USAGE_EVENT)
    data = usage.encode(usage_event())
    with pytest.raises(CodecError, match="trailing"):
        usage.decode(data + b"\x00")
    ledger = AvroCodec(registry, LEDGER_ENTRY)
    with pytest.raises(SchemaMismatchError, match="UsageEvent"):
        ledger.decode(data)


def test_errors_are_codec_errors_and_value_errors() -> None:
    for cls in (BadMagicByteError, TruncatedPayloadError, UnknownSchemaIdError):
        assert issubclass(cls, CodecError)
        assert issubclass(cls, ValueError)


@pytest.mark.parametrize(
    "bad",
    [
        {"units": {"input_tokens": "12"}},
        {"units": {"input_tokens": 1.5}},
        {"occurred_at": "yesterday"},
        {"event_id": None},
        {"model": 3},
        {"attributes": {"k": 1}},
        {"units": {"input_tokens": 1 << 63}},
    ],
)
def test_encoding_a_record_that_does_not_fit_raises_codec_error(bad: dict[str, Any]) -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode(usage_event(**bad))


def test_missing_required_field_raises_codec_error_for_every_subject() -> None:
    registry = load_registry()
    for subject in SUBJECTS:
        with pytest.raises(CodecError):
            AvroCodec(registry, subject).encode({})


def test_random_garbage_never_escapes_as_an_untyped_error() -> None:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    rng = random.Random(3)
    for _ in range(300):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        with contextlib.suppress(CodecError):
            codec.decode(frame_header(1) + body)
