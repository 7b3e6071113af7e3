"""kill -9 one broker of a 3-broker KRaft cluster in the middle of a run.

The test's own cluster (``devstack.kafka_cluster``: three broker+controller nodes from the same
jars), its topics created by ``create_topics`` with replication factor 3 and
``min.insync.replicas`` 2, and the processor's changelogs with 3 replicas too. Two processor
workers, the projection and the ClickHouse sink run while the input streams in; one broker is
killed mid-stream and stays dead to the end. With two replicas of every partition left, every
transaction can still commit: the ledger must equal the engine's pure fold entry for entry,
and ``metering reconcile`` must find the ledger, Redis and ClickHouse in agreement.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource
from processor_harness import (
    Input,
    Worker,
    decode_ledger,
    make_input,
    normalise,
    produce,
    pure_fold,
    read_topic,
)

from consumers.clickhouse import close_all, connect
from consumers.migrations import migrate
from consumers.reconcile import main as reconcile_main
from consumers.sink import ClickHouseSink
from devstack.kafka_cluster import LocalKafkaCluster
from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.topics import TopicNames, create_topics
from projections.consumer import ProjectionConsumer
from projections.redis_connect import connect as redis_connect

pytestmark = pytest.mark.integration

EVENTS = 2000
ACCOUNTS = 50


@pytest.fixture(autouse=True)
def ledger_audited_after_each_test() -> None:
    """Replaces the package's audit of the session broker's topics: this test's ledger lives
    on its own cluster, and the test runs the full ``metering reconcile`` on it."""


def _positions(consumer: Any) -> str:
    """Each assigned partition's fetch position against its (read_committed) end."""
    out = []
    try:
        for tp in consumer.position(consumer.assignment()):
            low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            out.append(f"[{tp.partition}] at {tp.offset} of {low}..{high}")
    except Exception as exc:  # a diagnostic: never hide the stall behind its own error
        out.append(f"unknown ({exc!r})")
    return ", ".join(out)


def _offsets_topic(bootstrap: str) -> str:
    """Leader, replicas and ISR of each partition of the group coordinators' topic."""
    topic = (
        AdminClient({"bootstrap.servers": bootstrap})
        .list_topics(timeout=10)
        .topics.get("__consumer_offsets")
    )
    if topic is None:
        return "__consumer_offsets: not listed"
    return "\n".join(
        f"__consumer_offsets[{p}]: leader {m.leader} replicas {m.replicas} isr {m.isrs}"
        for p, m in sorted(topic.partitions.items())
    )


@pytest.mark.timeout(420)
def test_a_broker_killed_mid_run_loses_nothing_and_counts_nothing_twice(
    redis_url: str,
    clickhouse_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    inp = make_input(topics, accounts=ACCOUNTS, events=EVENTS, seed=17)
    expected = normalise(pure_fold(inp))
    n_expected = sum(len(v) for v in expected.values())
    prefix = f"kc{uuid.uuid4().hex[:8]}:"
    database = f"t_{uuid.uuid4().hex[:10]}"
    migrate(clickhouse_url, database)
    close_all()
    with LocalKafkaCluster() as kafka:
        bootstrap = kafka.bootstrap
        create_topics(bootstrap, topics, 6)
        _assert_replicated(bootstrap, topics.credit_ledger)
        codec = AvroCodec(load_registry(), LEDGER_ENTRY)
        client = redis_connect(redis_url)
        projection = ProjectionConsumer(
            bootstrap=bootstrap,
            topics=topics,
            client=client,
            prefix=prefix,
            decode=codec.decode,
            group_id=f"proj-{topics.prefix}",
            poll_timeout_s=0.2,
        )
        sink = ClickHouseSink(
            bootstrap=bootstrap,
            client=connect(clickhouse_url, database),
            topics=topics,
            group=f"sink-{topics.prefix}",
            max_wait_s=0.2,
        )
        stop = threading.Event()
        threads = [
            threading.Thread(target=projection.run, args=(stop,), daemon=True),
            threading.Thread(target=sink.run, kwargs={"max_seconds": 300}, daemon=True),
        ]
        workers = [
            Worker(bootstrap, topics, "kc", tmp_path / f"w{i}", "--instance-id", f"w{i}")
            for i in range(2)
        ]
        try:
            for worker in workers:
                worker.start()
            for thread in threads:
                thread.start()
            produce(bootstrap, inp.commands)
            setup = sum(len(v) for v in pure_fold(Input(commands=inp.commands)).values())
            read_topic(bootstrap, topics.credit_ledger, setup, settle=0, timeout=120)
            half = len(inp.usage) // 2
            produce(bootstrap, inp.usage[:half])
            deadline = time.monotonic() + 60
            while sum(w.processed() for w in workers) < half // 2:
                assert time.monotonic() < deadline, "the workers did not start processing"
                time.sleep(0.05)
            kafka.kill(2)  # mid-stream; it stays down to the end
            produce(bootstrap, inp.usage[half:])
            ledger = decode_ledger(
                read_topic(bootstrap, topics.credit_ledger, n_expected, timeout=180, settle=3.0)
            )
            deadline = time.monotonic() + 120
            while projection.metrics.entries_applied < n_expected:
                if time.monotonic() >= deadline:
                    # Positions at the ledger's ends mean the workers stopped writing (their
                    # logs are in tmp_path; docs/processor.md items 13, 15, 16); short of the
                    # ends, the projection itself: its thread's stack says where it waits.
                    stacks = "\n".join(
                        f"thread {ident}:\n{''.join(traceback.format_stack(frame))}"
                        for ident, frame in sys._current_frames().items()
                    )
                    raise AssertionError(
                        f"the projection stalled: {projection.metrics}\n"
                        f"positions: {_positions(projection.consumer)}\n"
                        f"{_offsets_topic(bootstrap)}\n{stacks}"
                    )
                time.sleep(0.1)
        finally:
            stop.set()
            sink.stop()
            for thread in threads:
                thread.join(30)
            projection.close()
            for worker in workers:
                worker.stop()
        assert ledger == expected  # entry for entry, with one broker dead since mid-run
        # The sink's last rows, then every store against the ledger.
        ClickHouseSink(
            bootstrap=bootstrap,
            client=connect(clickhouse_url, database),
            topics=topics,
            group=f"sink-{topics.prefix}",
            max_wait_s=0.2,
        ).run(exit_when_caught_up=True, max_seconds=120)
        close_all()
        monkeypatch.setenv("METERING_KAFKA_BOOTSTRAP", bootstrap)
        monkeypatch.setenv("METERING_REDIS_PREFIX", prefix)
        code = reconcile_main(["--database", database, "--topic-prefix", topics.prefix])
        client.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{ACCOUNTS} accounts, 0 mismatched" in out


def _assert_replicated(bootstrap: str, topic: str) -> None:
    """3 replicas per partition and min ISR 2, as ``create_topics`` sets on 3 brokers."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + 30
    while True:
        # A broker that has not caught up with the new topic yet lists no partitions, or
        # answers the config request with UNKNOWN_TOPIC_OR_PART: ask again.
        try:
            partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
            config = admin.describe_configs([resource])[resource].result(timeout=10)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
        else:
            if partitions or time.monotonic() > deadline:
                break
        time.sleep(0.2)
    assert {len(p.replicas) for p in partitions.values()} == {3}
    assert config["min.insync.replicas"].value == "2"
