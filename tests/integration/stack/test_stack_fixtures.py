"""The shared fixtures hand out a working Kafka (transactions too), Redis and topics."""

from __future__ import annotations

import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from metering.config import load_settings
from metering.topics import TopicNames

pytestmark = pytest.mark.integration


def test_topics_fixture_creates_every_topic(kafka_bootstrap: str, topics: TopicNames) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    metadata = admin.list_topics(timeout=10).topics
    for name in topics.all():
        assert len(metadata[name].partitions) == 6


def test_settings_follow_the_session_stack(kafka_bootstrap: str, redis_url: str) -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap == kafka_bootstrap
    assert settings.redis_url == redis_url


def test_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"probe:{uuid.uuid4().hex}"
    assert client.set(key, "1", ex=10)
    assert client.get(key) == b"1"
    client.close()


def test_transactions_commit_and_read_committed(kafka_bootstrap: str, topics: TopicNames) -> None:
    """faust's exactly-once needs working transactions on the single-node broker."""
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"probe-{uuid.uuid4().hex}"}
    )
    partitions: list[int] = []
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(
        topics.credit_ledger,
        key=b"acct-1",
        value=b"committed",
        on_delivery=lambda _err, msg: partitions.append(msg.partition()),
    )
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topics.credit_ledger, key=b"acct-1", value=b"aborted")
    producer.flush(10)
    producer.abort_transaction(30)
    # A committed marker after the aborted batch, so the reader has a stable end to reach.
    producer.begin_transaction()
    producer.produce(topics.credit_ledger, key=b"acct-1", value=b"last")
    producer.commit_transaction(30)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topics.credit_ledger, partitions[0], 0)])
    seen: list[bytes] = []
    for _ in range(100):
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message.value())
        if seen[-1:] == [b"last"]:
            break
    consumer.close()
    assert seen == [b"committed", b"last"]
