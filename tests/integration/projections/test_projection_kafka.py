"""The projection consumer and the rebuild against real Kafka + Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from conftest import CREDIT, LedgerBuilder

from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.topics import TopicNames
from projections import cli
from projections.consumer import ProjectionConsumer
from projections.enforcement import Enforcer
from projections.rebuild import compare, rebuild
from projections.redis_connect import SyncRedis

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster_too]


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0


def drain(worker: ProjectionConsumer, until: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, worker.metrics
        worker.poll_once()


def read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + 20
    try:
        while len(found) < expected and time.monotonic() < deadline:
            found += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return found


def test_consume_dead_letter_gap_and_rebuild(
    kafka_bootstrap: str,
    topics: TopicNames,
    redis_url: str,
    rclient: SyncRedis,
    make_prefix: Callable[[], str],
    ledger: type[LedgerBuilder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    live = make_prefix()
    a, b = ledger("kafka-a"), ledger("kafka-b")
    entries = [a.plan("allow", limit=CREDIT), b.plan(features=["text_generation"])]
    entries += [a.grant("ga", 50 * CREDIT, expires_at=1_900_000_000_000), b.grant("gb", 5 * CREDIT)]
    entries += [a.debit(CREDIT) for _ in range(10)] + [b.debit(CREDIT // 2) for _ in range(4)]
    entries += [a.debit(45 * CREDIT)]
    records = [(e["account_id"], codec.encode(e)) for e in entries]
    records.insert(5, ("kafka-a", b"\x00\x00\x00\x00\x99garbage"))
    produce(kafka_bootstrap, topics.credit_ledger, records)

    worker = ProjectionConsumer(
        bootstrap=kafka_bootstrap,
        topics=topics,
        client=rclient,
        prefix=live,
        decode=codec.decode,
        group_id=f"proj-{uuid.uuid4().hex[:8]}",
        poll_timeout_s=0.2,
    )
    try:
        drain(worker, lambda: worker.metrics.entries_applied == len(entries))
        assert worker.metrics.dead_lettered == 1 and worker.metrics.gaps == 0
        enforcer = Enforcer(rclient, live)
        bal_a, bal_b = enforcer.balance("kafka-a"), enforcer.balance("kafka-b")
        assert bal_a is not None and bal_b is not None
        assert (bal_a.available, bal_a.overage_used, bal_a.seq) == (0, 5 * CREDIT, 13)
        assert (bal_b.available, bal_b.features) == (3 * CREDIT, ["text_generation"])

        # Offsets are committed to the end of what was applied or dead-lettered.
        partitions = [TopicPartition(topics.credit_ledger, p) for p in range(6)]
        committed = worker.consumer.committed(partitions, timeout=10)
        assert sum(max(tp.offset, 0) for tp in committed) == len(records)

        dead = read_all(kafka_bootstrap, topics.credit_ledger_dlq, 1)
        assert len(dead) == 1
        headers = {k: v.decode() for k, v in dead[0].headers()}
        assert headers["source.topic"] == topics.credit_ledger
        assert headers["error.class"] and headers["error.message"]
        assert int(headers["source.offset"]) >= 0 and "source.partition" in headers

        # A seq gap: seq 2 of a new account arrives before seq 1. It is not applied and the
        # partition is not committed past it; once seq 1 is there, the retry heals it.
        c = ledger("kafka-c")
        c1, c2 = c.plan(), c.grant("gc", CREDIT)
        produce(kafka_bootstrap, topics.credit_ledger, [("kafka-c", codec.encode(c2))])
        drain(worker, lambda: worker.metrics.gaps >= 1)
        assert enforcer.balance("kafka-c") is None
        produce(kafka_bootstrap, topics.credit_ledger, [("kafka-c", codec.encode(c1))])
        drain(worker, lambda: (enforcer.balance("kafka-c") or bal_a).seq == 2, timeout=60)
        assert enforcer.check("kafka-c", None, CREDIT).allowed
        hold = enforcer.reserve("kafka-b", CREDIT // 2, ttl_s=60)  # holds are not rebuilt
        assert hold
    finally:
        worker.close()

    rebuilt = make_prefix()
    report = rebuild(
        bootstrap=kafka_bootstrap,
        topics=topics,
        client=rclient,
        prefix=rebuilt,
        decode=codec.decode,
        timeout_s=60,
    )
    assert (report.dead, report.applied, report.gaps) == (1, len(entries) + 2, [])
    assert report.accounts == 3
    assert compare(rclient, live, rebuilt) == []

    # The CLI: one account into a third prefix, verified against the live projection.
    monkeypatch.setenv("METERING_REDIS_PREFIX", live)
    monkeypatch.setenv("METERING_REDIS_URL", redis_url)  # the CLI reads its Redis from settings
    third = make_prefix()
    args = ["rebuild", "--account", "kafka-b", "--redis-prefix", third, "--verify"]
    assert cli.main([*args, "--topic-prefix", topics.prefix]) == 0
    assert compare(rclient, live, third, "kafka-b") == []
    assert rclient.exists(f"{third}{{kafka-a}}:bal") == 0

    # A difference is found: tamper with the rebuilt copy.
    rclient.hset(f"{rebuilt}{{kafka-a}}:bal", "available", "1")
    assert compare(rclient, live, rebuilt) == ["kafka-a bal.available: live='0' rebuilt='1'"]
