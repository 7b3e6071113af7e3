"""``metering.topic_reader.read_to_end``: the one read-to-end, with start and stop offsets."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from metering.topic_reader import TopicReadError, read_to_end
from metering.topics import TopicNames

pytestmark = pytest.mark.integration


def _offsets(bootstrap: str, topic: str, **kwargs: object) -> dict[int, list[int]]:
    got: dict[int, list[int]] = {}
    for msgs in read_to_end(bootstrap, topic, **kwargs):  # type: ignore[arg-type]
        for msg in msgs:
            got.setdefault(msg.partition(), []).append(msg.offset())
    return got


def test_start_and_stop_bound_each_partition(kafka_bootstrap: str, topics: TopicNames) -> None:
    topic = topics.usage_events
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, count in ((0, 10), (1, 5)):
        for i in range(count):
            producer.produce(topic, value=b"%d" % i, partition=partition)
    producer.flush(10)

    everything = _offsets(kafka_bootstrap, topic, partitions=[0, 1, 2])
    assert everything == {0: list(range(10)), 1: list(range(5))}  # 2 is empty: ends at once
    assert _offsets(kafka_bootstrap, topic, partitions=[0, 1], stop={0: 6, 1: 0}) == {
        0: list(range(6))  # 1: a stop at the start reads nothing
    }
    assert _offsets(kafka_bootstrap, topic, partitions=[0], start={0: 2}, stop={0: 99}) == {
        0: list(range(2, 10))  # a stop past the end reads to the end
    }


def test_a_missing_topic_is_an_error(kafka_bootstrap: str) -> None:
    with pytest.raises(TopicReadError, match="not found"):
        list(read_to_end(kafka_bootstrap, "no-such-topic-here", timeout_s=10))
