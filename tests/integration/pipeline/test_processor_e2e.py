"""The processor end to end on a real broker: ledger = the engine's fold, dedupe, DLQ."""

from __future__ import annotations

from pathlib import Path

import pytest
from processor_harness import (
    T0,
    Input,
    Worker,
    decode_ledger,
    make_input,
    normalise,
    produce,
    produce_raw,
    pure_fold,
    read_topic,
)

from metering.avro import USAGE_EVENT, AvroCodec, load_registry
from metering.dlq import header_map
from metering.topics import TopicNames

pytestmark = pytest.mark.integration


def test_usage_and_commands_become_the_ledger_with_dedupe_and_dlq(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    inp = make_input(topics, accounts=12, events=600)
    worker = Worker(kafka_bootstrap, topics, "e2e", tmp_path).start()
    try:
        _run(kafka_bootstrap, topics, inp, worker)
    finally:
        worker.stop()


def _run(kafka_bootstrap: str, topics: TopicNames, inp: Input, worker: Worker) -> None:
    # Commands first and applied, so the order across the two topics is the fold's order.
    produce(kafka_bootstrap, inp.commands)
    setup = sum(len(v) for v in pure_fold(Input(commands=inp.commands)).values())
    assert len(read_topic(kafka_bootstrap, topics.credit_ledger, setup, settle=0)) == setup
    produce(kafka_bootstrap, inp.usage)
    # A re-sent duplicate, bytes that are not Avro, and an event the price book cannot price.
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    dup = next(u for u in inp.usage if u[1] == "acct-0003")
    unpriceable = codec.encode(
        {
            "event_id": "bad-feature",
            "account_id": "acct-0001",
            "feature": "teleportation",
            "units": {"requests": 1},
            "occurred_at": T0 + 5,
        }
    )
    produce(kafka_bootstrap, [dup])
    produce_raw(kafka_bootstrap, topics.usage_events, b"acct-0002", b"\x00\x00garbage", T0 + 6)
    produce_raw(kafka_bootstrap, topics.usage_events, b"acct-0001", unpriceable, T0 + 7)
    tail = make_input(TopicNames(topics.prefix), accounts=12, events=650).usage[600:]
    produce(kafka_bootstrap, tail)  # the stream goes on after the bad records

    expected = normalise(pure_fold(inp, [dup, *tail]))
    n_expected = sum(len(v) for v in expected.values())
    ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, n_expected))
    dlq = read_topic(kafka_bootstrap, topics.usage_events_dlq, 2, timeout=20)
    metrics = worker.metrics()

    assert ledger == expected
    assert sum(len(v) for v in ledger.values()) == n_expected
    causes = [e["cause_id"] for es in ledger.values() for e in es if e["type"] == "USAGE_DEBIT"]
    assert len(causes) == len(set(causes)), "an event_id was debited twice"
    assert all(
        e["price_version"] == "2025-01"
        for es in ledger.values()
        for e in es
        if e["type"] == "USAGE_DEBIT"
    )

    assert len(dlq) == 2
    by_class = {header_map(m.headers())["error.class"]: m for m in dlq}
    assert len(by_class) == 2
    garbage = next(m for m in dlq if m.value() == b"\x00\x00garbage")
    headers = header_map(garbage.headers())
    assert headers["source.topic"] == topics.usage_events
    assert (
        int(headers["source.offset"]) >= 0
        and int(headers["source.partition"]) == garbage.partition()
    )
    assert headers["error.message"]
    bad = next(m for m in dlq if m.value() == unpriceable)
    assert header_map(bad.headers())["error.class"] == "UnknownFeatureError"
    assert "metering_processor_events_processed_total" in metrics
    assert 'metering_processor_dlq_total{source="' in metrics
