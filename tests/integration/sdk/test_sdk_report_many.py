"""``report_many`` and ``success_reports=False`` against a real broker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from sdk_consume import consume_all

from metering.avro import USAGE_EVENT, AvroCodec, load_registry
from metering.sdk import DeliveryError, DeliveryReport, UsageReporter, make_usage_event
from metering.topics import TopicNames

pytestmark = pytest.mark.integration


def batch(n: int, accounts: int = 20) -> list[dict[str, Any]]:
    return [
        make_usage_event(
            f"acct-{i % accounts}",
            "text_generation",
            {"input_tokens": i, "output_tokens": 10**10 + i},  # both varint paths
            model=None if i % 3 else "gpt-large",
            attributes={"i": str(i)} if i % 2 else {},
            reservation_id=f"r-{i}" if i % 5 == 0 else None,
        )
        for i in range(n)
    ]


def test_report_many_round_trip_with_callbacks(kafka_bootstrap: str, topics: TopicNames) -> None:
    sent = batch(2_500)  # crosses the poll-every-2,000 boundary
    reports: list[DeliveryReport] = []
    with UsageReporter(kafka_bootstrap, topic=topics.usage_events) as reporter:
        assert reporter.report_many(sent[:1_000]) == 1_000
        assert reporter.report_many(sent[1_000:], on_delivery=reports.append) == 1_500
        assert reporter.sent == 2_500
    assert len(reports) == 1_500 and all(r.ok for r in reports)
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    received = consume_all(kafka_bootstrap, topics.usage_events, 2_500)
    by_id = {e["event_id"]: e for e in sent}
    assert len(received) == 2_500
    for msg in received:
        decoded = codec.decode(msg.value())
        assert decoded == by_id.pop(decoded["event_id"])
        assert msg.key() == decoded["account_id"].encode()
    assert not by_id


def test_fire_and_forget_mode_still_delivers(kafka_bootstrap: str, topics: TopicNames) -> None:
    sent = batch(500)
    with UsageReporter(
        kafka_bootstrap, topic=topics.usage_events, success_reports=False
    ) as reporter:
        reporter.report_many(sent[:400])
        for event in sent[400:]:
            reporter.report(event)
    assert len(consume_all(kafka_bootstrap, topics.usage_events, 500)) == 500


def test_fire_and_forget_mode_still_reports_failures(kafka_bootstrap: str) -> None:
    """The broker refuses every batch (topic limit below one record): failures must surface."""
    topic = f"sdk-too-small-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    new = NewTopic(topic, 1, 1, config={"max.message.bytes": "64"})
    admin.create_topics([new])[topic].result(timeout=30)
    try:
        failures: list[DeliveryReport] = []
        with UsageReporter(
            kafka_bootstrap, topic=topic, success_reports=False, on_error=failures.append
        ) as reporter:
            reporter.report_many(batch(5))
        assert len(failures) == 5 and not any(r.ok for r in failures)
        assert reporter.failed == 5

        silent = UsageReporter(kafka_bootstrap, topic=topic, success_reports=False)
        silent.report_many(batch(3))
        with pytest.raises(DeliveryError, match="3 records failed delivery"):
            silent.close()
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)
