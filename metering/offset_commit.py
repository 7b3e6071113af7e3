"""Synchronous offset commits that ride out a moving group coordinator.

A broker that dies takes the group coordinators it led with it; for a few seconds a commit
answers ``COORDINATOR_LOAD_IN_PROGRESS`` or ``NOT_COORDINATOR`` while another broker loads
the offsets topic. Those are retried here (with a short backoff, up to ``timeout_s``); an error
that means the partitions are gone (a rebalance, a fenced member) is raised at once, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

log = logging.getLogger("metering.kafka")

TRANSIENT = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
    }
)
"""Commit errors of a coordinator that moves or is briefly unreachable: worth a retry."""


def commit_offsets(
    consumer: Consumer, offsets: Sequence[TopicPartition], timeout_s: float = 60.0
) -> None:
    """``consumer.commit(offsets, asynchronous=False)``, retrying transient errors."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            consumer.commit(offsets=list(offsets), asynchronous=False)
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in TRANSIENT or time.monotonic() + delay > deadline:
                raise
            log.warning("offset commit will be retried: %s", error)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
