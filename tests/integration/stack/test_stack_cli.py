"""``metering stack up|status|down`` end to end, plus the broker restart helper.

Runs its own stack in a tmp state dir (not the session's), through the real console
command, so it covers what a user types.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from devstack import LocalStack
from devstack.process import pid_alive
from metering.topics import TopicNames, create_topics

pytestmark = pytest.mark.integration

METERING = [sys.executable, "-m", "cli.main"]


def _run(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env["METERING_STATE_DIR"] = str(state_dir)
    env["XDG_STATE_HOME"] = str(state_dir / "user-state")  # not the real user's pointer
    if "METERING_KAFKA_LIBS" in os.environ:
        env["METERING_KAFKA_LIBS"] = os.environ["METERING_KAFKA_LIBS"]
    return subprocess.run(
        [*METERING, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def _round_trip(bootstrap: str, topic: str, values: list[bytes], expect: int) -> list[bytes]:
    """Produce ``values`` keyed to one partition, then read the topic from the start."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, key=b"acct-rt", value=value)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"rt-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    # Assign rather than subscribe: no group rebalance to wait for.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < expect and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value())
    consumer.close()
    return seen


def test_up_status_round_trip_restart_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    up = _run(state_dir, "stack", "up")
    try:
        assert up.returncode == 0, up.stderr
        assert "stack: started" in up.stdout
        data = json.loads((state_dir / "stack.json").read_text())
        bootstrap = data["addresses"]["kafka_bootstrap"]
        redis_url = data["addresses"]["redis_url"]
        pids = data["pids"]
        assert set(pids) == {"kafka", "redis"}

        again = _run(state_dir, "stack", "up")
        assert again.returncode == 0 and "already running" in again.stdout

        status = _run(state_dir, "stack", "status")
        assert status.returncode == 0, status.stdout
        lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
        assert " up " in lines["kafka"] and bootstrap in lines["kafka"]
        assert " up " in lines["redis"] and redis_url in lines["redis"]
        assert f"chdb://{state_dir.resolve() / 'clickhouse'}" in lines["clickhouse"]

        names = TopicNames("rt.")
        create_topics(bootstrap, names, 3)
        assert _round_trip(bootstrap, names.usage_events, [b"a", b"b", b"c"], 3) == [
            b"a",
            b"b",
            b"c",
        ]
        client = redis.Redis.from_url(redis_url)
        assert client.ping()
        client.close()

        # The restart helper keeps ports and data: the records survive, the port is the same.
        stack = LocalStack(state_dir)
        stack.restart_kafka()
        assert stack.kafka_bootstrap == bootstrap
        assert not pid_alive(pids["kafka"])
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert names.usage_events in meta.topics
        assert _round_trip(bootstrap, names.usage_events, [b"d"], 4) == [b"a", b"b", b"c", b"d"]
        pids = json.loads((state_dir / "stack.json").read_text())["pids"]
    finally:
        down = _run(state_dir, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert not (state_dir / "stack.json").exists()
    assert not any(pid_alive(pid) for pid in pids.values())

    status = _run(state_dir, "stack", "status")
    assert status.returncode == 3
    assert "kafka       down" in status.stdout
    # A second down has nothing to stop and still succeeds.
    assert _run(state_dir, "stack", "down").returncode == 0
