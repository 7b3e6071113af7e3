"""The producer SDK against a real broker: round trip, partitioning, rejection, async."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from aiokafka.partitioner import murmur2
from sdk_consume import PARTITIONS, consume_all

from metering.avro import CREDIT_COMMAND, USAGE_EVENT, AvroCodec, load_registry
from metering.sdk import (
    CommandPublisher,
    DeliveryReport,
    InvalidUsageEvent,
    UsageReporter,
    make_usage_event,
)
from metering.topics import TopicNames

pytestmark = pytest.mark.integration


def events(n: int, accounts: int = 20) -> list[dict[str, Any]]:
    return [
        make_usage_event(
            f"acct-{i % accounts}",
            "text_generation",
            {"input_tokens": i, "output_tokens": 2 * i},
            subject=["design", "research"][i % 2],
            model="gpt-large",
            attributes={"i": str(i)},
        )
        for i in range(n)
    ]


def test_round_trip_and_account_partitioning(kafka_bootstrap: str, topics: TopicNames) -> None:
    sent = events(300)
    reports: list[DeliveryReport] = []
    with UsageReporter(kafka_bootstrap, topic=topics.usage_events) as reporter:
        for event in sent:
            reporter.report(event, on_delivery=reports.append)
    assert len(reports) == 300 and all(r.ok for r in reports)

    codec = AvroCodec(load_registry(), USAGE_EVENT)
    received = consume_all(kafka_bootstrap, topics.usage_events, 300)
    assert len(received) == 300
    by_id = {e["event_id"]: e for e in sent}
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for msg in received:
        decoded = codec.decode(msg.value())
        assert decoded == by_id[decoded["event_id"]]
        assert msg.key() == decoded["account_id"].encode()
        partitions[msg.key()].add(msg.partition())
    for key, seen in partitions.items():
        # One partition per account, and the one Java/faust (murmur2) would pick.
        assert seen == {(murmur2(key) & 0x7FFFFFFF) % PARTITIONS}, key


def test_same_account_same_partition_across_producers(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    landed: dict[str, set[int]] = defaultdict(set)

    def record(report: DeliveryReport) -> None:
        assert report.key is not None
        landed[report.key.decode()].add(report.partition)

    for _ in range(2):  # two independent producers (e.g. two service replicas)
        with UsageReporter(kafka_bootstrap, topic=topics.usage_events) as reporter:
            for event in events(120, accounts=40):
                reporter.report(event, on_delivery=record)
    assert len(landed) == 40
    assert all(len(parts) == 1 for parts in landed.values())
    assert len({p for parts in landed.values() for p in parts}) > 1  # spread out


def test_invalid_events_are_rejected_with_reason_and_never_sent(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    good = make_usage_event("acct-1", "image_generation", {"images": 1})
    with UsageReporter(kafka_bootstrap, topic=topics.usage_events) as reporter:
        with pytest.raises(InvalidUsageEvent, match=r"units\['images'\]: must be an integer"):
            reporter.report({**good, "units": {"images": 1.5}})
        with pytest.raises(InvalidUsageEvent, match="account_id: must not be empty"):
            reporter.report({**good, "account_id": ""})
        with pytest.raises(InvalidUsageEvent, match="event_id: required field is missing"):
            reporter.report({k: v for k, v in good.items() if k != "event_id"})
        reporter.report(good)
    received = consume_all(kafka_bootstrap, topics.usage_events, 1, timeout=15)
    assert [m.key() for m in received] == [b"acct-1"]


def test_report_async_resolves_with_the_offset(kafka_bootstrap: str, topics: TopicNames) -> None:
    async def run() -> list[DeliveryReport]:
        with UsageReporter(kafka_bootstrap, topic=topics.usage_events) as reporter:
            return await asyncio.gather(*(reporter.report_async(e) for e in events(50)))

    reports = asyncio.run(run())
    assert len(reports) == 50
    assert all(r.ok and r.offset >= 0 for r in reports)
    assert len({(r.partition, r.offset) for r in reports}) == 50


def test_command_publisher_round_trip(kafka_bootstrap: str, topics: TopicNames) -> None:
    command = {
        "command_id": "cmd-1",
        "account_id": "acct-9",
        "kind": "purchase",
        "amount": 25_000_000,
        "cost_basis_micros": 10_000,
        "currency": "USD",
        "issued_at": 1_767_225_600_000,
    }
    with CommandPublisher(kafka_bootstrap, topic=topics.credit_commands) as publisher:
        publisher.publish(command)
    (msg,) = consume_all(kafka_bootstrap, topics.credit_commands, 1, timeout=15)
    decoded = AvroCodec(load_registry(), CREDIT_COMMAND).decode(msg.value())
    assert msg.key() == b"acct-9"
    assert {k: decoded[k] for k in command} == command
