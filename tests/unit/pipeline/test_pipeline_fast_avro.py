"""The hand-written hot-path codecs equal fastavro's, byte for byte and value for value."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.avro import (
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    USAGE_EVENT,
    AvroCodec,
    CodecError,
    RegisteredSchema,
    load_catalog,
    load_registry,
)
from metering.avro.fields import field_names, first_difference, record_fields
from metering.avro.schemas import parse
from pipeline.fast_avro import (
    LEDGER_ENTRY_HEAD,
    LEDGER_ENTRY_SHAPE,
    make_ledger_entry_encoder,
    make_usage_event_decoder,
)
from pipeline.fast_command import CREDIT_COMMAND_SHAPE, make_credit_command_decoder

REGISTRY = load_registry()
LEDGER = AvroCodec(REGISTRY, LEDGER_ENTRY)
USAGE = AvroCodec(REGISTRY, USAGE_EVENT)
FAST_ENCODE = make_ledger_entry_encoder(LEDGER)
FAST_DECODE = make_usage_event_decoder(USAGE)
COMMAND = AvroCodec(REGISTRY, CREDIT_COMMAND)
FAST_COMMAND = make_credit_command_decoder(COMMAND)
COMMAND_KINDS = [
    s for f in COMMAND.writer.schema["fields"] if f["name"] == "kind" for s in f["type"]["symbols"]
]
TYPES = [
    "GRANT_CREATED",
    "USAGE_DEBIT",
    "GRANT_EXPIRED",
    "GRANT_VOIDED",
    "PERIOD_RESET",
    "ROLLOVER",
    "ADJUSTMENT",
    "OVERAGE",
    "USAGE_REJECTED",
    "PLAN_ASSIGNED",
    "OVERRIDE_SET",
    "COMMAND_REJECTED",
]
longs = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
small = st.integers(min_value=-(1 << 20), max_value=1 << 20)
nums = st.one_of(small, longs)
text = st.text(max_size=12)
opt_text = st.one_of(st.none(), text)
opt_long = st.one_of(st.none(), nums)

grants = st.fixed_dictionaries(
    {
        "grant_id": text,
        "source": text,
        "amount": nums,
        "priority": st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1),
        "effective_at": nums,
        "expires_at": opt_long,
        "cost_basis_micros": opt_long,
    }
)
terms = st.fixed_dictionaries(
    {
        "plan_id": text,
        "overage_policy": text,
        "overage_limit": nums,
        "features": st.one_of(st.none(), st.lists(text, max_size=4)),
        "monthly_credits": nums,
    }
)
entries = st.fixed_dictionaries(
    {
        "entry_id": text,
        "account_id": text,
        "seq": nums,
        "type": st.sampled_from(TYPES),
        "amount": nums,
        "allocations": st.lists(
            st.fixed_dictionaries({"grant_id": text, "amount": nums}), max_size=4
        ),
        "balance_after": nums,
        "overage_after": nums,
        "cause_id": text,
        "subject": opt_text,
        "feature": opt_text,
        "model": opt_text,
        "price_version": opt_text,
        "occurred_at": nums,
        "recorded_at": nums,
        "period_start": nums,
        "period_end": nums,
        "reason": opt_text,
        "reservation_id": opt_text,
        "grant": st.one_of(st.none(), grants),
        "terms": st.one_of(st.none(), terms),
    }
)
usage_events = st.fixed_dictionaries(
    {
        "event_id": text,
        "account_id": text,
        "subject": text,
        "feature": text,
        "model": opt_text,
        "units": st.dictionaries(text, nums, max_size=5),
        "occurred_at": nums,
        "source": text,
        "attributes": st.dictionaries(text, text, max_size=3),
        "reservation_id": opt_text,
    }
)
ints = st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1)
commands = st.fixed_dictionaries(
    {
        "command_id": text,
        "account_id": text,
        "kind": st.sampled_from(COMMAND_KINDS),
        "amount": opt_long,
        "grant_id": opt_text,
        "grant_source": opt_text,
        "priority": st.one_of(st.none(), ints),
        "effective_at": opt_long,
        "expires_at": opt_long,
        "plan_id": opt_text,
        "reason": opt_text,
        "cost_basis_micros": opt_long,
        "currency": opt_text,
        "override": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "monthly_credits": opt_long,
                    "overage_policy": opt_text,
                    "overage_limit": opt_long,
                    "trial_features": st.lists(text, max_size=3),
                    "trial_until": opt_long,
                }
            ),
        ),
        "auto_topup": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "enabled": st.booleans(),
                    "threshold": nums,
                    "amount": nums,
                    "max_requests": ints,
                    "window_ms": nums,
                }
            ),
        ),
        "event_id": opt_text,
        "units": st.one_of(st.none(), st.dictionaries(text, nums, max_size=5)),
        "issued_at": nums,
    }
)


def test_the_fast_paths_are_in_use() -> None:
    assert LEDGER.encode != FAST_ENCODE
    assert USAGE.decode != FAST_DECODE
    assert COMMAND.decode != FAST_COMMAND


def test_the_committed_schemas_take_the_fast_paths_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        assert make_ledger_entry_encoder(LEDGER) != LEDGER.encode
        assert make_usage_event_decoder(USAGE) != USAGE.decode
        assert make_credit_command_decoder(COMMAND) != COMMAND.decode
    assert caplog.records == []


def test_credit_command_shape_is_the_committed_schema() -> None:
    """If this fails, the .avsc changed: update the unrolled command decoder and its shape."""
    committed = record_fields(CREDIT_COMMAND)
    assert first_difference(CREDIT_COMMAND_SHAPE, committed) is None
    assert committed == CREDIT_COMMAND_SHAPE


def test_credit_command_decoder_reads_a_correction_and_an_older_writer() -> None:
    void = {
        "command_id": "fix-1",
        "account_id": "acme",
        "kind": "void_usage",
        "event_id": "evt-9",
        "reason": "model call failed",
        "issued_at": 1_767_225_600_000,
    }
    record = FAST_COMMAND(COMMAND.encode(void))
    assert tuple(record) == field_names(CREDIT_COMMAND)
    assert {k: v for k, v in record.items() if v is not None} == void
    older = AvroCodec(REGISTRY, CREDIT_COMMAND, version=1)  # another writer id: fastavro reads
    grant = {"command_id": "g", "account_id": "acme", "kind": "grant", "amount": 5, "issued_at": 1}
    assert FAST_COMMAND(older.encode(grant)) == COMMAND.decode(older.encode(grant))


def test_ledger_entry_shape_is_the_committed_schema() -> None:
    """If this fails, the .avsc changed: update the hand-unrolled encoder and its shape."""
    committed = record_fields(LEDGER_ENTRY)
    assert first_difference(LEDGER_ENTRY_SHAPE, committed) is None
    assert committed == LEDGER_ENTRY_SHAPE


def test_ledger_entry_head_fields_lead_every_ledger_schema() -> None:
    """``ledger_entry_head`` reads any writer version: each must start entry_id, account_id, seq."""
    assert [(f.name, f.type) for f in LEDGER_ENTRY_HEAD] == [
        ("entry_id", "string"),
        ("account_id", "string"),
        ("seq", "long"),
    ]
    for entry in load_catalog().versions(LEDGER_ENTRY):
        assert record_fields(LEDGER_ENTRY, entry.version)[:3] == LEDGER_ENTRY_HEAD


def test_usage_event_decoder_returns_the_fields_in_schema_order() -> None:
    event = {"event_id": "e", "account_id": "a", "feature": "f", "units": {}, "occurred_at": 1}
    assert tuple(FAST_DECODE(USAGE.encode(event))) == field_names(USAGE_EVENT)


class OneSchema:
    """A registry whose only schema is ``schema`` (a drifted one)."""

    def __init__(self, subject: str, schema: dict[str, Any], schema_id: int) -> None:
        self.entry = RegisteredSchema(schema_id, subject, None, schema, parse(schema))

    def writer_schema(self, subject: str, version: int | None = None) -> RegisteredSchema:
        return self.entry

    def by_id(self, schema_id: int) -> RegisteredSchema:
        return self.entry


def _drifted(subject: str, schema_id: int, edit: Any) -> AvroCodec:
    schema = copy.deepcopy(load_catalog().get(subject).schema)
    edit(schema["fields"])
    return AvroCodec(OneSchema(subject, schema, schema_id), subject)


def test_a_drifted_ledger_schema_gets_the_generic_encoder_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def add_grant_note(fields: list[dict[str, Any]]) -> None:
        (grant,) = (f for f in fields if f["name"] == "grant")
        grant["type"][1]["fields"].append({"name": "note", "type": "string", "default": ""})

    codec = _drifted(LEDGER_ENTRY, 903, add_grant_note)
    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        assert make_ledger_entry_encoder(codec) == codec.encode
        assert make_ledger_entry_encoder(codec) == codec.encode
    [warning] = caplog.records
    message = warning.getMessage()
    assert "io.metering.LedgerEntry (schema id 903)" in message
    assert "LedgerEntry encoder" in message and "unexpected field 'grant.note'" in message


def test_a_drifted_usage_schema_gets_the_generic_decoder_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def swap_subject_and_feature(fields: list[dict[str, Any]]) -> None:
        fields[2], fields[3] = fields[3], fields[2]

    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        codec = _drifted(USAGE_EVENT, 904, swap_subject_and_feature)
        assert not codec.fast_encoder
        assert make_usage_event_decoder(codec) == codec.decode
        assert make_usage_event_decoder(codec) == codec.decode
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # once for the codec's encoder, once for this decoder
    assert "UsageEvent decoder" in messages[1] and "(schema id 904)" in messages[1]
    assert "field 2 is 'feature', expected 'subject'" in messages[1]


@settings(max_examples=400, deadline=None)
@given(entries)
def test_ledger_entry_encoder_is_byte_for_byte_fastavro(entry: dict[str, Any]) -> None:
    assert FAST_ENCODE(entry) == LEDGER.encode(entry)


@settings(max_examples=400, deadline=None)
@given(usage_events)
def test_usage_event_decoder_reads_what_fastavro_reads(event: dict[str, Any]) -> None:
    data = USAGE.encode(event)
    assert FAST_DECODE(data) == USAGE.decode(data) == event


@settings(max_examples=400, deadline=None)
@given(commands)
def test_credit_command_decoder_reads_what_fastavro_reads(command: dict[str, Any]) -> None:
    data = COMMAND.encode(command)
    assert FAST_COMMAND(data) == COMMAND.decode(data) == command


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return ("ok", decode(data))
    except CodecError as exc:
        return ("error", type(exc))


@settings(max_examples=400, deadline=None)
@given(usage_events, st.data())
def test_usage_event_decoder_agrees_on_damaged_payloads(event: dict[str, Any], data: Any) -> None:
    good = USAGE.encode(event)
    cut = data.draw(st.integers(min_value=0, max_value=len(good)))
    junk = data.draw(st.binary(max_size=8))
    for damaged in (good[:cut], good + junk, good[:cut] + junk):
        assert _outcome(FAST_DECODE, damaged) == _outcome(USAGE.decode, damaged)


@settings(max_examples=400, deadline=None)
@given(commands, st.data())
def test_credit_command_decoder_agrees_on_damaged_payloads(
    command: dict[str, Any], data: Any
) -> None:
    good = COMMAND.encode(command)
    cut = data.draw(st.integers(min_value=0, max_value=len(good)))
    junk = data.draw(st.binary(max_size=8))
    for damaged in (good[:cut], good + junk, good[:cut] + junk):
        assert _outcome(FAST_COMMAND, damaged) == _outcome(COMMAND.decode, damaged)
