"""Read a test topic from the start (shared by the SDK's integration tests)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

PARTITIONS = 6


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Read ``topic`` from the start until ``expected`` records arrived (or time runs out)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"sdk-test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    out.append(msg)
        # Anything beyond ``expected`` (duplicates) shows up within a short grace period.
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            if msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out
