"""A broker restart in the middle of a produce run: nothing lost, nothing duplicated."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from sdk_consume import consume_all

from metering.avro import USAGE_EVENT, AvroCodec, load_registry
from metering.sdk import DeliveryReport, UsageReporter, make_usage_event
from metering.topics import TopicNames

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EVENTS = 30_000


@pytest.mark.timeout(120)
def test_restart_mid_run_loses_and_duplicates_nothing(stack: Any, topics: TopicNames) -> None:
    if stack.local is None:
        pytest.skip(f"broker restarts need the local stack, not {stack.kind}")
    sent = [
        make_usage_event(f"acct-{i % 97}", "text_generation", {"input_tokens": i})
        for i in range(EVENTS)
    ]
    failures: list[DeliveryReport] = []
    restarted = threading.Event()

    errors: list[BaseException] = []

    def restart() -> None:
        try:
            stack.restart_kafka(downtime=1.0)
            restarted.set()
        except BaseException as exc:
            errors.append(exc)

    # Small batches and a slow pace keep records in flight while the broker goes away.
    config = {"linger.ms": 5, "batch.num.messages": 500}
    with UsageReporter(
        stack.kafka_bootstrap, topic=topics.usage_events, config=config, on_error=failures.append
    ) as reporter:
        restarter = threading.Thread(target=restart)
        for i, event in enumerate(sent):
            reporter.report(event)
            if i == EVENTS // 3:
                reporter.flush(10)
                restarter.start()
            if i > EVENTS // 3 and not restarted.is_set() and i % 200 == 0:
                time.sleep(0.01)
        restarter.join(timeout=90)
        assert restarted.is_set(), f"broker did not come back: {errors!r}"
    assert failures == []

    codec = AvroCodec(load_registry(), USAGE_EVENT)
    received = consume_all(stack.kafka_bootstrap, topics.usage_events, EVENTS, timeout=45)
    counts = Counter(codec.decode(m.value())["event_id"] for m in received)
    duplicates = [eid for eid, n in counts.items() if n > 1]
    missing = {e["event_id"] for e in sent} - set(counts)
    assert not duplicates, f"{len(duplicates)} duplicated events"
    assert not missing, f"{len(missing)} lost events"
    assert len(received) == EVENTS
