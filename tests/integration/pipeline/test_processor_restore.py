"""State restore after kill -9: the ledger, not the changelog, is the truth.

The black-box test of issue 12 saw about one restart in twenty restore *nothing*: faust's
recovery marked every changelog partition done ("Aborted tx until highwater") 40 ms after it
started, and every account began again at seq 1 with a zero balance. The cause and fix are in
docs/processor.md ("Exactly once", item 10). These tests force the race that caused it, and
then kill the worker thirty times at random moments, restore included.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from processor_harness import (
    Input,
    Worker,
    decode_ledger,
    make_input,
    normalise,
    produce,
    pure_fold,
    read_topic,
)
from test_processor_crash import _check, _setup

from metering.topics import TopicNames

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param((), id="position-fix"),
        pytest.param(("--fault-fetch-position",), id="without-it-the-check-repairs"),
    ],
)
def test_a_restore_whose_poll_times_out_mid_fetch_still_restores_every_account(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path, faults: tuple[str, ...]
) -> None:
    """A pause between each fetch and its delivery longer than recovery's poll: the poll then
    times out while the changelog's records are fetched but not yet queued, the window in
    which faust used to decide that the partition ended in an aborted transaction. With the
    position fix the restore is whole; without it, the restore check completes each table
    from its changelog's tail before anything is processed."""
    inp = make_input(topics, accounts=30, events=600, seed=3)
    expected = normalise(pure_fold(inp))
    n_expected = sum(len(v) for v in expected.values())
    half = len(inp.usage) // 2
    delay = ("--fault-delivery-delay", "2.0", *faults)
    worker = Worker(kafka_bootstrap, topics, "restore", tmp_path, "--instance-id", "r1", *delay)
    worker.start()
    try:
        _setup(kafka_bootstrap, topics, inp)
        produce(kafka_bootstrap, inp.usage[:half])
        first = normalise(pure_fold(Input(commands=inp.commands, usage=inp.usage[:half])))
        n_first = sum(len(v) for v in first.values())
        read_topic(kafka_bootstrap, topics.credit_ledger, n_first, timeout=120, settle=0.5)
        time.sleep(1.5)  # recovery's idle polls time out meanwhile, as on a long-running worker
        worker.kill()
        worker.start()
        worker.wait_restored()
        repaired = worker.gauge("metering_processor_restore_repaired_records_total")
        produce(kafka_bootstrap, inp.usage[half:])
        ledger = decode_ledger(
            read_topic(kafka_bootstrap, topics.credit_ledger, n_expected, timeout=120, settle=2.0)
        )
    finally:
        worker.stop()
    _check(ledger, expected)
    if faults:
        assert repaired > 0, "the restore was whole: the fault did not hit the window"
    else:
        assert repaired == 0, "the position fix let the restore lose records"


def _wait_ledger(
    bootstrap: str, topics: TopicNames, inp: Input, worker: Worker
) -> dict[str, list[dict[str, object]]]:
    expected = normalise(pure_fold(inp))
    n = sum(len(v) for v in expected.values())
    worker.wait_restored()
    ledger = decode_ledger(read_topic(bootstrap, topics.credit_ledger, n, timeout=90, settle=0.3))
    _check(ledger, expected)
    return ledger


def _kill_after_a_commit(worker: Worker, timeout: float = 10.0) -> None:
    """Kill the worker the moment its transaction count moves (a commit just happened)."""
    before = worker.gauge("metering_processor_transactions_total")
    deadline = time.monotonic() + timeout
    while worker.gauge("metering_processor_transactions_total") == before:
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    worker.kill()


@pytest.mark.slow
def test_a_restart_storm_never_makes_the_ledger_wrong(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """kill -9 the worker 6 times (``METERING_STORM_RESTARTS``: 30 or more for the long run)
    at random moments: during its restore, while it processes, right after a commit. After
    every restart the ledger must equal the engine's pure fold entry for entry. The seed is
    printed (``METERING_STORM_SEED`` replays a run)."""
    seed = int(os.environ.get("METERING_STORM_SEED") or random.randrange(1 << 30))
    restarts = int(os.environ.get("METERING_STORM_RESTARTS", "6"))
    print(f"restart storm: seed {seed}, {restarts} restarts")
    rnd = random.Random(seed)
    inp = make_input(topics, accounts=60, events=4000, seed=seed)
    rounds = restarts // 2 + restarts % 2  # each round: one mid-run kill and one restore kill
    size = -(-len(inp.usage) // rounds)
    worker = Worker(kafka_bootstrap, topics, "storm", tmp_path, "--instance-id", "s1").start()
    kills: dict[str, int] = {"restore": 0, "processing": 0, "after_commit": 0}
    produced = Input(commands=inp.commands)
    try:
        _setup(kafka_bootstrap, topics, inp)
        for start in range(0, len(inp.usage), size):
            chunk = inp.usage[start : start + size]
            produce(kafka_bootstrap, chunk)
            produced.usage.extend(chunk)
            if sum(kills.values()) < restarts:
                moment = rnd.choice(["processing", "after_commit"])
                worker.wait_processing()
                if moment == "processing":
                    time.sleep(rnd.uniform(0.0, 0.3))
                    worker.kill()
                else:
                    _kill_after_a_commit(worker)
                kills[moment] += 1
                worker.start()
            if sum(kills.values()) < restarts:
                time.sleep(rnd.uniform(0.3, 2.5))  # somewhere in start-up, join or restore
                worker.kill()
                kills["restore"] += 1
                worker.start()
            _wait_ledger(kafka_bootstrap, topics, produced, worker)
        assert worker.proc is not None and worker.proc.poll() is None, "the worker crashed"
    finally:
        worker.stop()
    print(f"restart storm: seed {seed}, kills {kills}")
    assert sum(kills.values()) == restarts, kills


def test_a_static_member_back_on_another_address_takes_its_partitions_again(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """A worker restarted with the same ``--instance-id`` but another web port (a redeploy).

    The broker hands a static member that rejoins the assignment of its previous generation,
    whose metadata names the old address; faust asserted that it names the new one, the
    consumer's coordinator died on that, and the worker sat there processing nothing."""
    inp = make_input(topics, accounts=20, events=1000, seed=3)
    half = len(inp.usage) // 2
    before = Worker(kafka_bootstrap, topics, "moved", tmp_path, "--instance-id", "m1").start()
    try:
        _setup(kafka_bootstrap, topics, inp)
        produce(kafka_bootstrap, inp.usage[:half])
        before.wait_processing()
    finally:
        before.kill()
    after = Worker(kafka_bootstrap, topics, "moved", tmp_path, "--instance-id", "m1")
    assert after.port != before.port
    after.start()
    try:
        produce(kafka_bootstrap, inp.usage[half:])
        _wait_ledger(kafka_bootstrap, topics, inp, after)  # every entry, each once
    finally:
        after.stop()
