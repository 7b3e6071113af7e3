"""Offset commits retry a moving coordinator and give up at once on lost partitions."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from metering.offset_commit import commit_offsets


class Answers:
    """A consumer whose commits fail with the given error codes, then succeed."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        self.calls = 0

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False and offsets
        self.calls += 1
        if self.codes:
            raise KafkaException(KafkaError(self.codes.pop(0)))


def test_a_coordinator_that_moves_is_waited_for() -> None:
    consumer: Any = Answers(
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR, KafkaError._TRANSPORT
    )
    commit_offsets(consumer, [TopicPartition("t", 0, 5)])
    assert consumer.calls == 4


def test_lost_partitions_raise_at_once() -> None:
    consumer: Any = Answers(KafkaError.ILLEGAL_GENERATION)
    with pytest.raises(KafkaException):
        commit_offsets(consumer, [TopicPartition("t", 0, 5)])
    assert consumer.calls == 1


def test_a_coordinator_that_never_comes_back_raises_after_the_timeout() -> None:
    consumer: Any = Answers(*[KafkaError.COORDINATOR_NOT_AVAILABLE] * 100)
    with pytest.raises(KafkaException):
        commit_offsets(consumer, [TopicPartition("t", 0, 5)], timeout_s=0.3)
    assert 2 <= consumer.calls < 100
