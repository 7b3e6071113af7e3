"""UsageEvent validation: each rule names its field; the fused fast path agrees with it."""

from __future__ import annotations

import copy
import io
import logging
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.avro import USAGE_EVENT, AvroCodec, RegisteredSchema, load_registry
from metering.avro.schemas import parse
from metering.sdk import InvalidUsageEvent, make_usage_event, validate_usage_event
from metering.sdk.fastpath import make_checked_encoder

CODEC = AvroCodec(load_registry(), USAGE_EVENT)


def slow_path(event: Any) -> bytes:
    validate_usage_event(event)
    return CODEC.encode(event)


CHECKED = make_checked_encoder(CODEC.header, slow_path)


def event(**overrides: Any) -> dict[str, Any]:
    base = make_usage_event(
        "acct-1",
        "text_generation",
        {"input_tokens": 10, "output_tokens": 0},
        event_id="e-1",
        occurred_at=1_767_225_600_000,
        model="gpt-large",
        attributes={"region": "eu"},
    )
    base.update(overrides)
    return base


def fastavro_bytes(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(CODEC.header)
    schemaless_writer(buf, CODEC.writer.parsed, record)
    return buf.getvalue()


def test_valid_event_passes_both_paths() -> None:
    validate_usage_event(event())
    assert CHECKED(event()) == fastavro_bytes(event())


def test_minimal_event_with_only_required_fields() -> None:
    minimal = {
        "event_id": "e",
        "account_id": "a",
        "feature": "f",
        "units": {"requests": 1},
        "occurred_at": 1_767_225_600_000,
    }
    validate_usage_event(minimal)
    assert CHECKED(minimal) == fastavro_bytes(minimal)


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"account_id": ""}, "account_id", "must not be empty"),
    ({"account_id": None}, "account_id", "must be a string"),
    ({"account_id": "x" * 257}, "account_id", "longer than 256 UTF-8 bytes"),
    ({"account_id": "\u00e9" * 129}, "account_id", "longer than 256 UTF-8 bytes"),
    ({"account_id": "a{b}"}, "account_id", "must not contain '{' or '}'"),
    ({"event_id": ""}, "event_id", "must not be empty"),
    ({"feature": 7}, "feature", "must be a string"),
    ({"units": {}}, "units", "1..16 entries"),
    ({"units": [("input_tokens", 1)]}, "units", "must be a mapping"),
    ({"units": {"input_tokens": -1}}, "units['input_tokens']", "0..1000000000000"),
    ({"units": {"input_tokens": 1.0}}, "units['input_tokens']", "must be an integer"),
    ({"units": {"input_tokens": True}}, "units['input_tokens']", "must be an integer"),
    ({"units": {"input_tokens": 10**13}}, "units['input_tokens']", "0..1000000000000"),
    ({"units": {"": 1}}, "units", "keys must be non-empty"),
    ({"units": {f"u{i}": 1 for i in range(17)}}, "units", "1..16"),
    ({"occurred_at": 1_767_225_600.5}, "occurred_at", "int epoch milliseconds"),
    ({"occurred_at": 1_767_225_600}, "occurred_at", "outside 2000..2100"),
    ({"subject": ""}, "subject", "must not be empty"),
    ({"model": ""}, "model", "must not be empty"),
    ({"source": "s" * 129}, "source", "longer than 128"),
    ({"attributes": {"k": 1}}, "attributes['k']", "must be a string"),
    ({"attributes": {f"k{i}": "v" for i in range(33)}}, "attributes", "more than 32"),
    ({"attributes": {"k": "v" * 257}}, "attributes['k']", "longer than 256"),
    ({"attributes": "region=eu"}, "attributes", "must be a mapping"),
    ({"reservation_id": ""}, "reservation_id", "must not be empty"),
    ({"unit": {"x": 1}}, "unit", "unknown field"),
]


@pytest.mark.parametrize(("overrides", "field", "reason"), BAD)
def test_invalid_events_name_field_and_reason(
    overrides: dict[str, Any], field: str, reason: str
) -> None:
    for check in (validate_usage_event, CHECKED):
        with pytest.raises(InvalidUsageEvent) as info:
            check(event(**overrides))
        assert info.value.field == field
        assert reason in info.value.reason


@pytest.mark.parametrize("missing", ["event_id", "account_id", "feature", "units", "occurred_at"])
def test_missing_required_field(missing: str) -> None:
    incomplete = event()
    del incomplete[missing]
    for check in (validate_usage_event, CHECKED):
        with pytest.raises(InvalidUsageEvent, match=f"{missing}: required field is missing"):
            check(incomplete)


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidUsageEvent, match="must be a mapping"):
        CHECKED(["not", "an", "event"])  # type: ignore[arg-type]


def test_unusual_but_valid_inputs_take_the_slow_path() -> None:
    class Name(str):
        pass

    unusual = event(account_id=Name("acct-1"))
    assert CHECKED(unusual) == fastavro_bytes(event())


TEXT = st.text(max_size=20)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**64),
    st.floats(allow_nan=False),
    TEXT,
    st.dictionaries(TEXT, st.integers(-2, 10**13) | TEXT, max_size=3),
)
FIELDS = st.sampled_from(
    [
        *("event_id", "account_id", "subject", "feature", "model", "units", "occurred_at"),
        *("source", "attributes", "reservation_id", "extra"),
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(FIELDS, VALUES, max_size=4), st.lists(FIELDS, max_size=2))
def test_fast_path_agrees_with_the_validator(overrides: dict[str, Any], removed: list[str]) -> None:
    """Random damage: the fused path accepts exactly what the validator accepts."""
    candidate = event(**overrides)
    for name in removed:
        candidate.pop(name, None)
    try:
        validate_usage_event(candidate)
    except InvalidUsageEvent as expected:
        with pytest.raises(InvalidUsageEvent) as got:
            CHECKED(candidate)
        assert str(got.value) == str(expected)
    else:
        assert CHECKED(candidate) == fastavro_bytes(candidate)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        st.characters(exclude_characters="{}", exclude_categories=["Cs"]), min_size=1, max_size=64
    ),
    st.dictionaries(
        st.text(min_size=1, max_size=64), st.integers(0, 10**12), min_size=1, max_size=16
    ),
    st.integers(946_684_800_000, 4_102_444_800_000),
    st.none() | st.text(min_size=1, max_size=128),
    st.dictionaries(st.text(min_size=1, max_size=64), st.text(max_size=256), max_size=8),
)
def test_fast_path_bytes_equal_fastavro_for_valid_events(
    account: str,
    units: dict[str, int],
    occurred_at: int,
    model: str | None,
    attributes: dict[str, str],
) -> None:
    valid = event(
        account_id=account,
        units=units,
        occurred_at=occurred_at,
        model=model,
        attributes=attributes,
    )
    assert CHECKED(valid) == fastavro_bytes(valid)


def test_fast_path_field_order_is_the_committed_schema() -> None:
    """The fast path unpacks the fields in FIELD_ORDER: if this fails, the .avsc changed."""
    from metering.avro.fields import field_names, record_fields
    from metering.avro.usage_encoder import USAGE_EVENT_SHAPE
    from metering.sdk.fastpath import FIELD_ORDER, OPTIONAL_DEFAULTS
    from metering.sdk.validation import KNOWN_FIELDS

    assert field_names(USAGE_EVENT) == FIELD_ORDER
    assert tuple(f.name for f in USAGE_EVENT_SHAPE) == FIELD_ORDER
    assert {f.name: f.default for f in USAGE_EVENT_SHAPE if not f.required} == OPTIONAL_DEFAULTS
    assert {f.name for f in record_fields(USAGE_EVENT) if f.required} == {
        "event_id",
        "account_id",
        "feature",
        "units",
        "occurred_at",
    }
    assert frozenset(FIELD_ORDER) == KNOWN_FIELDS


def test_the_committed_schema_takes_the_sdk_fast_path(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        assert make_checked_encoder(CODEC.header, slow_path) is not slow_path
        assert make_checked_encoder(CODEC.header, slow_path, writer=CODEC.writer) is not slow_path
    assert caplog.records == []


def test_a_drifted_schema_leaves_only_the_slow_path(caplog: pytest.LogCaptureFixture) -> None:
    """Never wrong bytes: a writer schema the fast path was not unrolled for bypasses it."""
    schema = copy.deepcopy(CODEC.writer.schema)
    schema["fields"].append({"name": "region", "type": "string", "default": ""})
    writer = RegisteredSchema(905, USAGE_EVENT, None, schema, parse(schema))
    with caplog.at_level(logging.WARNING, logger="metering.avro.fields"):
        assert make_checked_encoder(CODEC.header, slow_path, writer=writer) is slow_path
    [warning] = caplog.records
    assert "SDK usage fast path" in warning.getMessage()
    assert "(schema id 905)" in warning.getMessage()
    assert "unexpected field 'region'" in warning.getMessage()


def test_cache_hits_still_check_types() -> None:
    """A cached string must not let an equal-hashing non-str through (UserString is one)."""
    from collections import UserString

    assert CHECKED(event()) == fastavro_bytes(event())  # warms every cache
    for overrides in (
        {"account_id": UserString("acct-1")},
        {"feature": UserString("text_generation")},
        {"units": {UserString("input_tokens"): 10}},
        {"attributes": {"region": UserString("eu")}},
    ):
        with pytest.raises(InvalidUsageEvent, match=r"must be a string|non-empty strings"):
            CHECKED(event(**overrides))


def test_repeated_values_encode_identically_across_cache_states() -> None:
    """Hits, misses and evictions give the same bytes (caches only ever hold valid values)."""
    encoder = make_checked_encoder(CODEC.header, slow_path)
    samples = [
        event(account_id=f"a{i % 7}", units={"u": i * 997, "v": 10**11 + i}, occurred_at=10**12 + i)
        for i in range(50)
    ]
    for sample in samples * 3:
        assert encoder(sample) == fastavro_bytes(sample)
