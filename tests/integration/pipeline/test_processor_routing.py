"""A producer with another partitioner than the pipeline's still gets one ledger per account.

Usage comes from a raw confluent-kafka producer with librdkafka's default partitioner (CRC32),
commands from the SDK (murmur2, the pipeline's). Most accounts' usage lands on another partition
than their commands; the processor forwards each such record to its account's partition
(``pipeline/routing.py``), so the ledger is still the engine's pure fold, entry for entry.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from confluent_kafka import Producer
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

from metering.topics import TopicNames
from pipeline.routing import Router

pytestmark = pytest.mark.integration


def test_usage_from_another_partitioner_is_forwarded_to_its_accounts_partition(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    inp = make_input(topics, accounts=8, events=200)
    router = Router(6)
    crc32 = Producer({"bootstrap.servers": kafka_bootstrap})  # librdkafka's default: CRC32
    worker = Worker(kafka_bootstrap, topics, "routing", tmp_path).start()
    try:
        produce(kafka_bootstrap, inp.commands)  # murmur2, as the SDK
        setup = sum(len(v) for v in pure_fold(Input(commands=inp.commands)).values())
        read_topic(kafka_bootstrap, topics.credit_ledger, setup, settle=0)
        for topic, account, value, ts in inp.usage:
            crc32.produce(topic, key=account.encode(), value=value, timestamp=ts)
        assert crc32.flush(30) == 0
        expected = normalise(pure_fold(inp))
        total = sum(len(v) for v in expected.values())
        ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, total, settle=2))
        rerouted = worker.gauge("metering_processor_rerouted_total")
    finally:
        worker.stop()
    assert ledger == expected
    # librdkafka's default partitioner is CRC32 of the key: those records that it put elsewhere
    # than murmur2 were each forwarded once.
    elsewhere = sum(1 for _, a, _, _ in inp.usage if zlib.crc32(a.encode()) % 6 != router.home(a))
    assert rerouted == elsewhere > 0
