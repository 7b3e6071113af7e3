"""A 20 s broker outage leaves a calm log: one "lost" line, one "restored" line, a few others.

Before, a 23 s outage wrote 172,795 lines to the processor's log (aiokafka retrying thousands of
times a second). This test runs the processor against a broker of its own, kills the broker for
20 s while the worker runs, starts it again, and then checks that the worker writes a bounded
number of lines, says once that Kafka was lost and once that it came back, and goes on
processing (the ledger equals the engine's fold).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
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
from test_processor_crash import _setup

from consumers.reconcile import main as reconcile_main
from devstack.kafka import KafkaNode, ensure_jars
from devstack.process import pid_alive
from metering.net import free_port
from metering.topics import TopicNames, create_topics

pytestmark = pytest.mark.integration

PREFIX = "outage."
OUTAGE_S = 20.0
MAX_LINES_FOR_THE_OUTAGE = 150
"""Lines the worker may write from the kill to the end of the run (it wrote ~170,000)."""


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[KafkaNode, list[int]]]:
    """A broker of this test's own (the session's broker must not go down under other tests)."""
    libs = ensure_jars()
    node = KafkaNode(tmp_path / "kafka", free_port(), free_port())
    node.write_config()
    node.format_storage(libs)
    pids = [node.start(libs)]
    node.wait_ready(pids[0])
    try:
        yield node, pids
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def ledger_audited_after_each_test(
    own_broker: tuple[KafkaNode, list[int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[None]:
    """The package's ledger audit (conftest.py), on this test's own broker."""
    yield
    monkeypatch.setenv("METERING_KAFKA_BOOTSTRAP", own_broker[0].bootstrap)
    code = reconcile_main(["--ledger-only", "--topic-prefix", PREFIX])
    out = capsys.readouterr().out
    assert code == 0, f"metering reconcile --ledger-only failed:\n{out}"


def test_a_20s_broker_outage_is_two_lines_and_processing_goes_on(
    own_broker: tuple[KafkaNode, list[int]], tmp_path: Path
) -> None:
    node, pids = own_broker
    bootstrap = node.bootstrap
    topics = TopicNames(PREFIX)
    create_topics(bootstrap, topics, 6)
    inp = make_input(topics, accounts=10, events=400, seed=5)
    half = len(inp.usage) // 2
    worker = Worker(bootstrap, topics, "outage", tmp_path, "--log-level", "info")
    worker.start()
    try:
        worker.wait_restored()
        _setup(bootstrap, topics, inp)  # commands first: the fold's order across topics
        produce(bootstrap, inp.usage[:half])
        first = normalise(pure_fold(Input(commands=inp.commands, usage=inp.usage[:half])))
        n_first = sum(len(v) for v in first.values())
        assert len(read_topic(bootstrap, topics.credit_ledger, n_first, timeout=90)) == n_first
        before = len(worker.log_path.read_text().splitlines())

        os.kill(pids[0], signal.SIGKILL)
        time.sleep(OUTAGE_S)
        pids.append(node.start(ensure_jars()))
        node.wait_ready(pids[-1])

        produce(bootstrap, inp.usage[half:])
        expected = normalise(pure_fold(inp))
        n_expected = sum(len(v) for v in expected.values())
        ledger = decode_ledger(read_topic(bootstrap, topics.credit_ledger, n_expected, timeout=120))
        assert ledger == expected
        time.sleep(2)  # the probe's "restored" line
        lines = worker.log_path.read_text().splitlines()[before:]
    finally:
        worker.stop()
    text = "\n".join(lines)
    print(f"{OUTAGE_S:.0f} s broker outage: the worker wrote {len(lines)} log lines")
    assert len(lines) <= MAX_LINES_FOR_THE_OUTAGE, f"{len(lines)} lines:\n{text[-5000:]}"
    assert text.count("Kafka connection lost") == 1, text[-5000:]
    assert text.count("Kafka connection restored after") == 1, text[-5000:]
