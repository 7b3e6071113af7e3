"""Crash safety and scale-out of the processor on a real broker.

kill -9 at random moments during a 50,000-event run, restart each time; the read_committed
ledger must equal the engine's pure fold exactly (so debits per account match, and every
account's seq is gap-free and duplicate-free).
"""

from __future__ import annotations

import random
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
    rnd = random.Random()
    inp = make_input(topics, accounts=300, events=50_000, seed=rnd.randrange(1 << 30))
    expected = normalise(pure_fold(inp))
    n_expected = sum(len(v) for v in expected.values())

    worker = Worker(kafka_bootstrap, topics, "crash", tmp_path, "--instance-id", "w1").start()
    kills = 0
    try:
        _setup(kafka_bootstrap, topics, inp)
        produce(kafka_bootstrap, inp.usage)
        for _ in range(4):
            worker.wait_processing()  # kill mid-stream, not during start-up
            time.sleep(rnd.uniform(0.05, 1.5))
            worker.kill()
            kills += 1
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
        _setup(kafka_bootstrap, topics, inp)
        produce(kafka_bootstrap, inp.usage)
        ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, n_expected))
        shares = [w.metrics() for w in (first, second)]
    finally:
        first.stop()
        second.stop()
    _check(ledger, expected)
    processed = [
        int(
            next(
                line.split()[-1]
                for line in m.splitlines()
                if line.startswith("metering_processor_events_processed_total")
            )
        )
        for m in shares
    ]
    assert all(n > 0 for n in processed), f"one worker did nothing: {processed}"
