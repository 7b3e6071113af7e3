"""The hand-written hot-path codecs equal fastavro's, byte for byte and value for value."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.avro import LEDGER_ENTRY, USAGE_EVENT, AvroCodec, CodecError, load_registry
from pipeline.fast_avro import make_ledger_entry_encoder, make_usage_event_decoder

REGISTRY = load_registry()
LEDGER = AvroCodec(REGISTRY, LEDGER_ENTRY)
USAGE = AvroCodec(REGISTRY, USAGE_EVENT)
FAST_ENCODE = make_ledger_entry_encoder(LEDGER)
FAST_DECODE = make_usage_event_decoder(USAGE)
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


def test_the_fast_paths_are_in_use() -> None:
    assert LEDGER.encode != FAST_ENCODE
    assert USAGE.decode != FAST_DECODE


@settings(max_examples=400, deadline=None)
@given(entries)
def test_ledger_entry_encoder_is_byte_for_byte_fastavro(entry: dict[str, Any]) -> None:
    assert FAST_ENCODE(entry) == LEDGER.encode(entry)


@settings(max_examples=400, deadline=None)
@given(usage_events)
def test_usage_event_decoder_reads_what_fastavro_reads(event: dict[str, Any]) -> None:
    data = USAGE.encode(event)
    assert FAST_DECODE(data) == USAGE.decode(data) == event


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
