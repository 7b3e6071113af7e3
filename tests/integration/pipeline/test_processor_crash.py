"""Crash safety and scale-out of the processor on a real broker.

kill -9 at random moments during a 50,000-event run, restart each time; workers joining and
leaving the group while input flows. Each time the read_committed ledger must equal the
engine's pure fold exactly (so debits per account match, and every account's seq is gap-free
and duplicate-free).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from processor_harness import (
    Input,
    Worker,
    debits,
    decode_ledger,
    make_input,
    normalise,
    produce,
    produce_paced,
    pure_fold,
    read_topic,
)

from metering.topics import TopicNames

pytestmark = pytest.mark.integration


def _setup(bootstrap: str, topics: TopicNames, inp: Input) -> None:
    """Commands first and applied, so the order across the two topics is the fold's order."""
    produce(bootstrap, inp.commands)
    setup = sum(len(v) for v in pure_fold(Input(commands=inp.commands)).values())
    assert len(read_topic(bootstrap, topics.credit_ledger, setup, settle=0, timeout=60)) == setup


def _check(
    ledger: dict[str, list[dict[str, Any]]], expected: dict[str, list[dict[str, Any]]]
) -> None:
    for acct, entries in ledger.items():
        seqs = [e["seq"] for e in entries]
        assert seqs == list(range(1, len(seqs) + 1)), f"{acct}: seq has gaps or duplicates"
    assert debits(ledger) == debits(expected)
    assert ledger == expected


@pytest.mark.slow
def test_kill_dash_9_during_a_run_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """Four kill -9s mid-stream; 20,000 events by default (``METERING_CRASH_EVENTS`` for a
    longer run)."""
    rnd = random.Random()
    events = int(os.environ.get("METERING_CRASH_EVENTS", "20000"))
    inp = make_input(topics, accounts=300, events=events, seed=rnd.randrange(1 << 30))
    expected = normalise(pure_fold(inp))
    n_expected = sum(len(v) for v in expected.values())

    worker = Worker(kafka_bootstrap, topics, "crash", tmp_path, "--instance-id", "w1").start()
    kills = 0
    try:
        _setup(kafka_bootstrap, topics, inp)
        # The input goes in 5 chunks and each restart finds a fresh one: every kill lands
        # mid-stream.
        size = -(-len(inp.usage) // 5)
        chunks = [inp.usage[i : i + size] for i in range(0, len(inp.usage), size)]
        produce(kafka_bootstrap, chunks[0])
        for chunk in chunks[1:]:
            worker.wait_processing()  # kill mid-stream, not during start-up
            time.sleep(rnd.uniform(0.02, 0.4))
            worker.kill()
            kills += 1
            produce(kafka_bootstrap, chunk)
            worker.start()
        ledger = decode_ledger(
            read_topic(kafka_bootstrap, topics.credit_ledger, n_expected, timeout=120, settle=3.0)
        )
    finally:
        worker.stop()
    assert kills == 4
    _check(ledger, expected)


def test_two_workers_in_one_group_give_the_same_ledger_as_one(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    inp = make_input(topics, accounts=40, events=4000, seed=11)
    expected = normalise(pure_fold(inp))
    n_expected = sum(len(v) for v in expected.values())
    first = Worker(kafka_bootstrap, topics, "pair", tmp_path).start()
    second = Worker(kafka_bootstrap, topics, "pair", tmp_path).start()
    try:
        # Wait for the split before any input: the processor is fast enough to finish the input
        # during the second worker's join, and then the second worker would have nothing to do.
        # Input during rebalances is the churn test's job.
        deadline = time.monotonic() + 60
        while True:
            owned = [w.assigned(topics.usage_events) for w in (first, second)]
            if all(owned) and not owned[0] & owned[1] and len(owned[0] | owned[1]) == 6:
                break
            assert time.monotonic() < deadline, f"no stable split of the partitions: {owned}"
            time.sleep(0.2)
        _setup(kafka_bootstrap, topics, inp)
        produce(kafka_bootstrap, inp.usage)
        ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, n_expected))
        shares = [w.metrics() for w in (first, second)]
    finally:
        first.stop()
        second.stop()
    _check(ledger, expected)
    processed = [
        float(
            next(
                line.split()[-1]
                for line in m.splitlines()
                if line.startswith("metering_processor_events_processed_total")
            )
        )
        for m in shares
    ]
    assert all(n > 0 for n in processed), f"one worker did nothing: {processed}"


@pytest.mark.slow
def test_workers_joining_and_leaving_under_load_give_the_same_ledger_as_one(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """Partitions move while batches are in flight, and come back to a worker that owned them.

    This is what broke twice: a batch fetched across a rebalance made its partition skip
    records, and a worker that got a partition back restored it from a stale local RocksDB
    (docs/processor.md, "Exactly once", items 6-9).
    """
    inp = make_input(topics, accounts=200, events=40_000, seed=5)
    expected = normalise(pure_fold(inp))
    n_expected = sum(len(v) for v in expected.values())
    workers = [Worker(kafka_bootstrap, topics, "churn", tmp_path).start()]
    try:
        _setup(kafka_bootstrap, topics, inp)
        workers[0].wait_processing()
        feed = threading.Thread(
            target=produce_paced, args=(kafka_bootstrap, inp.usage, 4_000), daemon=True
        )
        feed.start()
        time.sleep(1)
        workers.append(Worker(kafka_bootstrap, topics, "churn", tmp_path).start())
        time.sleep(4)
        workers.append(Worker(kafka_bootstrap, topics, "churn", tmp_path).start())
        time.sleep(4)
        workers[1].stop()
        feed.join(60)
        assert not feed.is_alive(), "the input was not produced in time"
        ledger = decode_ledger(
            read_topic(kafka_bootstrap, topics.credit_ledger, n_expected, timeout=90, settle=3.0)
        )
        alive = [w.proc is not None and w.proc.poll() is None for w in (workers[0], workers[2])]
    finally:
        for worker in workers:
            worker.stop()
    _check(ledger, expected)
    assert all(alive), "a worker crashed during the rebalances; see its log in tmp_path"
    for worker in workers:  # docs/processor.md, item 14: every assignment holds every topic
        assert "Ignoring missing topic" not in worker.log_path.read_text(), worker.log_path
