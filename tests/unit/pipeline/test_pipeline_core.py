"""The batch logic of the processor, without Kafka (stand-in engine)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from stub_engine import StubEngine

from metering.avro import (
    CREDIT_ALERT,
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    USAGE_EVENT,
    AvroCodec,
    load_registry,
)
from metering.dlq import header_map
from metering.topics import TopicNames
from pipeline.core import BatchProcessor, Codecs, InMessage
from pipeline.metrics import Metrics
from pipeline.routing import REROUTED_FROM, Router

TOPICS = TopicNames("u.")
REG = load_registry()
USAGE, COMMAND, LEDGER = (AvroCodec(REG, s) for s in (USAGE_EVENT, CREDIT_COMMAND, LEDGER_ENTRY))


def _processor() -> tuple[BatchProcessor, Metrics]:
    metrics = Metrics()
    codecs = Codecs(USAGE, COMMAND, LEDGER, AvroCodec(REG, CREDIT_ALERT))
    return BatchProcessor(TOPICS, StubEngine, codecs, metrics), metrics


def _usage(offset: int, event_id: str, account: str, partition: int = 0, **kw: Any) -> InMessage:
    record = {
        "event_id": event_id,
        "account_id": account,
        "feature": kw.get("feature", "text"),
        "units": {"requests": 2},
        "occurred_at": 1000,
    }
    return InMessage(
        TOPICS.usage_events,
        partition,
        offset,
        5000 + offset,
        account.encode(),
        USAGE.encode(record),
    )


def _grant(offset: int, command_id: str, account: str, partition: int = 0) -> InMessage:
    record = {
        "command_id": command_id,
        "account_id": account,
        "kind": "grant",
        "amount": 10_000,
        "issued_at": 1000,
    }
    return InMessage(
        TOPICS.credit_commands, partition, offset, 4000, account.encode(), COMMAND.encode(record)
    )


def test_batch_applies_in_order_per_account_and_writes_state_once() -> None:
    proc, metrics = _processor()
    stored: dict[tuple[int, str], bytes] = {}
    batch = [
        _grant(0, "g1", "a"),
        _usage(0, "e1", "a"),
        _usage(1, "e2", "b", partition=1),
        _usage(2, "e1", "a"),
    ]
    out = proc.process(batch, lambda p, k: stored.get((p, k)))
    entries = [LEDGER.decode(r.value) for r in out[0].records if r.value is not None]
    assert [(e["type"], e["seq"], e["amount"]) for e in entries] == [
        ("GRANT_CREATED", 1, 10_000),
        ("USAGE_DEBIT", 2, -2000),
    ]
    assert entries[1]["recorded_at"] == 5000  # the input's timestamp, so replays are identical
    assert set(out[0].states) == {"a"} and set(out[1].states) == {"b"}
    assert metrics.processed == 4 and metrics.batch_count == 1


def test_state_is_loaded_from_the_store_so_replays_are_deduplicated() -> None:
    proc, _ = _processor()
    first = proc.process([_usage(0, "e1", "a")], lambda p, k: None)
    saved = first[0].states["a"]
    again = proc.process([_usage(0, "e1", "a")], lambda p, k: saved)
    assert again[0].records == []


def test_undecodable_and_unpriceable_records_go_to_the_dlq_with_headers() -> None:
    proc, metrics = _processor()
    garbage = InMessage(TOPICS.usage_events, 3, 42, 1, b"k", b"\x01nope")
    out = proc.process(
        [
            garbage,
            _usage(43, "e9", "a", partition=3, feature="unpriceable"),
            _usage(44, "e1", "a", 3),
        ],
        lambda p, k: None,
    )
    dlq = [r for r in out[3].records if r.topic == TOPICS.usage_events_dlq]
    assert next(r.value for r in dlq) == b"\x01nope"
    h = header_map(dlq[0].headers)
    assert h["error.class"] == "BadMagicByteError"
    assert (h["source.topic"], h["source.partition"], h["source.offset"]) == (
        TOPICS.usage_events,
        "3",
        "42",
    )
    assert header_map(dlq[1].headers)["error.class"] == "unknown_feature"
    assert any(r.topic == TOPICS.credit_ledger for r in out[3].records)  # the stream went on
    assert metrics.dead_lettered == {TOPICS.usage_events: 2}


def test_an_unknown_feature_is_dead_lettered_with_an_alert_once_per_event() -> None:
    """The real engine: DLQ record + UNKNOWN_FEATURE alert in the same partition output (one
    transaction), nothing in the ledger or the state; a copy is dead-lettered, not re-alerted."""
    from pipeline.engine_adapter import DomainEngine

    engine = DomainEngine.from_files()
    metrics = Metrics()
    codecs = Codecs(USAGE, COMMAND, LEDGER, AvroCodec(REG, CREDIT_ALERT))
    proc = BatchProcessor(TOPICS, lambda: engine, codecs, metrics)
    t0 = 1_767_225_600_000
    bad = InMessage(
        TOPICS.usage_events,
        2,
        7,
        t0 + 7,
        b"acct",
        USAGE.encode(
            {
                "event_id": "tp-1",
                "account_id": "acct",
                "feature": "teleport",
                "units": {"requests": 1},
                "occurred_at": t0,
            }
        ),
    )
    out = proc.process([bad], lambda p, k: None)[2]
    assert [r.topic for r in out.records] == [TOPICS.usage_events_dlq, TOPICS.credit_alerts]
    letter, alert_record = out.records
    assert header_map(letter.headers)["error.class"] == "UnknownFeatureError"
    assert letter.value == bad.value and letter.key == b"acct"
    alert = codecs.alert.decode(alert_record.value or b"")
    assert alert_record.key == b"acct"
    assert alert["kind"] == "UNKNOWN_FEATURE"
    assert (alert["alert_id"], alert["account_id"], alert["cause_id"]) == (
        "acct/unknown_feature/tp-1",
        "acct",
        "tp-1",
    )
    assert "'teleport'" in alert["message"]
    assert out.states == {} and out.entries == 0
    assert metrics.alerts == 1 and metrics.dead_lettered == {TOPICS.usage_events: 1}

    again = proc.process([replace(bad, offset=8)], lambda p, k: None)[2]
    assert [r.topic for r in again.records] == [TOPICS.usage_events_dlq]
    assert metrics.alerts == 1 and metrics.alerts_suppressed == 1
    proc.clear_cache()  # a rebalance: the memory of sent alerts goes with the state cache
    third = proc.process([replace(bad, offset=9)], lambda p, k: None)[2]
    assert [r.topic for r in third.records] == [TOPICS.usage_events_dlq, TOPICS.credit_alerts]


def test_a_record_off_its_accounts_partition_is_forwarded_there_not_applied() -> None:
    metrics = Metrics()
    codecs = Codecs(USAGE, COMMAND, LEDGER, AvroCodec(REG, CREDIT_ALERT))
    router = Router(6)
    proc = BatchProcessor(TOPICS, StubEngine, codecs, metrics, router=router)
    home = router.home("acme")
    away = (home + 1) % 6
    outputs = proc.process([_usage(0, "e1", "acme", partition=away)], lambda p, a: None)
    (forwarded,) = outputs[away].records
    assert (forwarded.topic, forwarded.partition, forwarded.key) == (
        TOPICS.usage_events,
        home,
        b"acme",
    )
    assert forwarded.headers == [(REROUTED_FROM, str(away).encode())]
    assert not outputs[away].states and metrics.rerouted == 1 and metrics.processed == 0
    # On its home partition it is applied; forwarded again it would loop: dead-lettered.
    at_home = proc.process([_usage(1, "e1", "acme", partition=home)], lambda p, a: None)
    assert at_home[home].states
    again = replace(_usage(2, "e2", "acme", partition=away), headers=forwarded.headers)
    (dead,) = proc.process([again], lambda p, a: None)[away].records
    assert dead.topic == TOPICS.usage_events_dlq
    assert "partition count" in header_map(dead.headers)["error.message"]
