"""Read committed records of a topic's partitions up to their end: one way, for every caller.

"The end" is what a ``read_committed`` reader can see when it gets there (the last stable
offset, past any trailing transaction markers and aborted records), reported by librdkafka's
partition-EOF event. A partition with nothing in it ends at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


class TopicReadError(RuntimeError):
    """The topic is missing, or its partitions were not read to their end in time."""


def read_to_end(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int] | None = None,
    *,
    start: Mapping[int, int] | None = None,
    stop: Mapping[int, int] | None = None,
    timeout_s: float | None = 120.0,
    batch_size: int = 10_000,
) -> Iterator[list[Any]]:
    """Batches of confluent-kafka messages (each partition in offset order) until every one of
    ``partitions`` (default: all) is read to its end, each from its ``start`` offset (default:
    the beginning), within ``timeout_s`` (None: no limit).

    ``stop`` (partition -> offset, exclusive) ends a partition there instead, if it comes
    first: records at or after it are not returned (e.g. a consumer group's committed
    position, beyond which the group's own consumer has the records)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"metering-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            # An empty partition's end is known when a fetch returns empty; the broker holds
            # such a fetch for fetch.wait.max.ms (500 by default), and every reader paid that
            # once or twice: 1.56 s to read an empty ledger at each worker start. 10 ms now.
            "fetch.wait.max.ms": 10,
            "log_level": 3,
        }
    )
    try:
        info = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if info is None or info.error is not None:
            raise TopicReadError(f"topic {topic} not found")
        stops = stop or {}
        offsets = start or {}
        pending = {
            p
            for p in (info.partitions if partitions is None else partitions)
            if p not in stops or stops[p] > offsets.get(p, 0)
        }
        if not pending:
            return
        consumer.assign(
            [TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in sorted(pending)]
        )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pending:
            if deadline is not None and time.monotonic() > deadline:
                raise TopicReadError(f"{topic} not read to its end in {timeout_s}s: {pending}")
            out = []
            for msg in consumer.consume(batch_size, 0.05):  # returns at batch_size or 50 ms
                err = msg.error()
                if err is None:
                    end = stops.get(msg.partition())
                    if end is not None and msg.offset() >= end - 1:
                        pending.discard(msg.partition())
                        if msg.offset() >= end:
                            continue
                    out.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise TopicReadError(f"reading {topic}: {err}")
            if out:
                yield out
    finally:
        consumer.close()
