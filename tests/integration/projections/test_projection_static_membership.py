"""``metering run projection --instance-id``: a kill -9 costs seconds, not a session timeout.

Without static membership, a consumer killed with kill -9 keeps its partitions in the group
until the broker's session timeout (45 s) evicts it, and Redis is stale that long even when a
replacement starts at once. With ``--instance-id`` (Kafka's ``group.instance.id``) the
restarted process is recognised as the same member and takes its partitions back at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer
from conftest import CREDIT, LedgerBuilder

from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.topics import TopicNames
from projections.keys import account_keys

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SESSION_TIMEOUT_S = 45.0
"""librdkafka's default ``session.timeout.ms``: what a restart without static membership waits."""
RESUME_WITHIN_S = 15.0


class Projection:
    """``metering run projection`` as a child process (logs in ``log``)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "run", "projection", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
            )

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.tail()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture
def projection(
    tmp_path: Path, topics: TopicNames, make_prefix: Callable[[], str]
) -> Iterator[tuple[Projection, str]]:
    prefix = make_prefix()
    env = dict(os.environ, METERING_REDIS_PREFIX=prefix, PYTHONUNBUFFERED="1")
    group = f"{topics.prefix}projection-{uuid.uuid4().hex[:6]}"
    args = ["--topic-prefix", topics.prefix, "--group", group, "--instance-id", "projection-0"]
    child = Projection([*args, "--log-level", "info"], env, tmp_path / "projection.log")
    try:
        yield child, prefix
    finally:
        child.stop()


def produce(bootstrap: str, topic: str, codec: AvroCodec, entries: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for entry in entries:
        producer.produce(topic, key=entry["account_id"].encode(), value=codec.encode(entry))
    assert producer.flush(30) == 0


def wait_applied(
    client: redis.Redis,
    prefix: str,
    accounts: list[LedgerBuilder],
    child: Projection,
    timeout: float,
) -> float:
    """Seconds until every account's last seq is in Redis."""
    started = time.monotonic()
    keys = [account_keys(prefix, a.account).balance for a in accounts]
    want = [str(a.seq).encode() for a in accounts]
    while True:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "seq")
        if pipe.execute() == want:
            return time.monotonic() - started
        assert child.alive(), child.tail()
        assert time.monotonic() - started < timeout, child.tail()
        time.sleep(0.05)


def test_projection_restarted_with_its_instance_id_resumes_at_once(
    kafka_bootstrap: str,
    topics: TopicNames,
    rclient: redis.Redis,
    ledger: type[LedgerBuilder],
    projection: tuple[Projection, str],
) -> None:
    child, prefix = projection
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    accounts = [ledger(f"static-{i}") for i in range(12)]  # spread over the 6 partitions
    first: list[dict[str, Any]] = []
    for a in accounts:
        first += [a.plan(), a.grant("g", 100 * CREDIT), a.debit(CREDIT)]
    produce(kafka_bootstrap, topics.credit_ledger, codec, first)

    child.start()
    wait_applied(rclient, prefix, accounts, child, timeout=60)
    child.kill9()

    # Written while the projection is dead: only a member owning the partitions applies it.
    second = [a.debit(CREDIT) for a in accounts for _ in range(3)]
    produce(kafka_bootstrap, topics.credit_ledger, codec, second)
    restarted = time.monotonic()
    child.start()
    wait_applied(rclient, prefix, accounts, child, timeout=SESSION_TIMEOUT_S)
    resumed_s = time.monotonic() - restarted
    assert resumed_s < RESUME_WITHIN_S, (resumed_s, child.tail())
    for a in accounts:
        available = rclient.hget(account_keys(prefix, a.account).balance, "available")
        assert available == str(a.balance).encode()
