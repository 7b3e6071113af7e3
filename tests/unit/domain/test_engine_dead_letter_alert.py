"""An unknown feature is dead-lettered (raised) *and* owed an UNKNOWN_FEATURE alert."""

from __future__ import annotations

import io
import json

import fastavro
import pytest
from engine_testkit import CREDIT, T0, command, make_engine, text

from metering.avro import CREDIT_ALERT, load_catalog
from metering.domain import (
    AlertKind,
    CreditAlert,
    UnknownFeatureError,
    UnknownModelError,
    UsageEvent,
    ValidationError,
)


def _teleport(event_id: str = "tp-1", account: str = "a1") -> UsageEvent:
    return UsageEvent(event_id, account, "teleport", {"requests": 1}, T0 + 50, model="gpt-4o")


def test_unknown_feature_raises_leaves_the_state_and_owes_an_alert() -> None:
    engine = make_engine()
    state = engine.new_state("a1")
    engine.apply_command(state, command("assign_plan", "p", T0, plan_id="starter"), T0)
    engine.apply_usage(state, text("t1", T0 + 10), T0 + 10)
    before = state.to_bytes()
    event = _teleport()
    with pytest.raises(UnknownFeatureError) as raised:
        engine.apply_usage(state, event, T0 + 60)
    assert state.to_bytes() == before  # nothing charged, nothing remembered

    alert = engine.dead_letter_alert(state, event, raised.value)
    assert alert is not None
    assert alert.alert_id == "a1/unknown_feature/tp-1"
    assert alert.kind is AlertKind.UNKNOWN_FEATURE
    assert (alert.account_id, alert.cause_id, alert.occurred_at) == ("a1", "tp-1", T0 + 50)
    assert alert.balance == state.balance == 2000 * CREDIT - CREDIT
    assert (alert.period_start, alert.period_end) == (state.period_start, state.period_end)
    assert alert.amount is None and alert.grant_id is None and alert.threshold_pct is None
    assert "'teleport'" in alert.message and "tp-1" in alert.message
    assert state.to_bytes() == before  # building the alert is read-only
    # Every copy of the event gets the same id (consumers dedupe on it).
    assert engine.dead_letter_alert(state, event, raised.value) == alert


def test_a_new_account_alerts_with_an_empty_balance_and_period() -> None:
    engine = make_engine()
    state = engine.new_state("fresh")
    event = _teleport("tp-9", "fresh")
    with pytest.raises(UnknownFeatureError) as raised:
        engine.apply_usage(state, event, T0)
    alert = engine.dead_letter_alert(state, event, raised.value)
    assert alert is not None
    assert (alert.balance, alert.period_start, alert.period_end) == (0, 0, 0)


def test_other_dead_letter_causes_do_not_alert() -> None:
    engine = make_engine()
    state = engine.new_state("a1")
    event = _teleport()
    assert engine.dead_letter_alert(state, event, UnknownModelError("no rate")) is None
    assert engine.dead_letter_alert(state, event, ValidationError("bad")) is None


def test_the_alert_fits_the_newest_credit_alert_contract() -> None:
    engine = make_engine()
    state = engine.new_state("a1")
    alert = engine.dead_letter_alert(state, _teleport(), UnknownFeatureError("x"))
    assert alert is not None
    newest = load_catalog().get(CREDIT_ALERT)
    assert newest.version == 2 and newest.schema_id == 5
    schema = fastavro.parse_schema(
        json.loads(json.dumps(newest.schema).replace('"logicalType"', '"_logical"'))
    )
    record = alert.to_record()
    assert fastavro.validation.validate(record, schema, strict=True)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    assert CreditAlert.from_record(fastavro.schemaless_reader(buf, schema)) == alert
    # v1 (schema id 4) has no such symbol: the kind needs v2.
    v1 = load_catalog().get(CREDIT_ALERT, 1).schema
    assert "UNKNOWN_FEATURE" not in v1["fields"][2]["type"]["symbols"]
