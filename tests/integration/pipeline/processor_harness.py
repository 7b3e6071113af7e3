"""Helpers for the processor's integration tests: input generation, a worker subprocess,
read_committed ledger reads, and the engine's pure fold of the same input."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from metering.avro import CREDIT_COMMAND, LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
from metering.domain.charges import ChargeWindow
from metering.net import free_port
from metering.topics import TopicNames
from pipeline.engine_adapter import DomainEngine
from pipeline.worker import worker_command

REPO = Path(__file__).resolve().parents[3]
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z: mid-period for every anchor-day-1 plan
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-haiku", None]


@dataclass
class Input:
    """Produced records in order: (topic, account_id, value bytes, timestamp ms)."""

    commands: list[tuple[str, str, bytes, int]] = field(default_factory=list)
    usage: list[tuple[str, str, bytes, int]] = field(default_factory=list)


def make_input(topics: TopicNames, accounts: int, events: int, seed: int = 7) -> Input:
    """Plans + a purchase per account first, then usage spread over accounts (some duplicates)."""
    import random

    rnd = random.Random(seed)
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    inp = Input()
    for a in range(accounts):
        acct = f"acct-{a:04d}"
        plan = ["growth", "starter", "enterprise"][a % 3]
        for cmd in (
            {
                "command_id": f"plan-{acct}",
                "account_id": acct,
                "kind": "assign_plan",
                "plan_id": plan,
                "issued_at": T0,
            },
            {
                "command_id": f"buy-{acct}",
                "account_id": acct,
                "kind": "purchase",
                "amount": 500_000_000,
                "cost_basis_micros": 10_000,
                "currency": "USD",
                "issued_at": T0 + 1,
            },
        ):
            inp.commands.append(
                (topics.credit_commands, acct, ccodec.encode(cmd), int(cmd["issued_at"]))
            )
    for i in range(events):
        if i % 97 == 96:  # a producer retry: the previous event again, byte for byte
            inp.usage.append(inp.usage[-1])
            continue
        acct = f"acct-{rnd.randrange(accounts):04d}"
        at = T0 + 10_000 + i
        event_id = f"ev-{i}"
        record = {
            "event_id": event_id,
            "account_id": acct,
            "subject": rnd.choice(["design", "research", "marketing"]),
            "feature": "text_generation",
            "model": rnd.choice(MODELS),
            "units": {
                "requests": 1,
                "input_tokens": rnd.randrange(2000),
                "output_tokens": rnd.randrange(800),
            },
            "occurred_at": at,
        }
        inp.usage.append((topics.usage_events, acct, ucodec.encode(record), at))
    return inp


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "enable.idempotence": True,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            # The pipeline's partitioner (the SDK's): an account's records of every topic, from
            # this producer or the SDK's, reach the same partition.
            "partitioner": "murmur2_random",
        }
    )


def _send(producer: Producer, records: Iterable[tuple[str, str, bytes, int]]) -> int:
    n = 0
    for topic, key, value, ts in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key.encode(), timestamp=ts)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 10000 == 0:
            producer.poll(0)
    return n


def produce(bootstrap: str, records: Iterable[tuple[str, str, bytes, int]]) -> int:
    producer = _producer(bootstrap)
    n = _send(producer, records)
    assert producer.flush(30) == 0
    return n


def produce_paced(
    bootstrap: str, records: list[tuple[str, str, bytes, int]], per_s: int, step: int = 250
) -> None:
    """Produce ``records`` at about ``per_s`` a second: one producer, ``step`` at a time."""
    producer = _producer(bootstrap)
    start = time.monotonic()
    for i in range(0, len(records), step):
        _send(producer, records[i : i + step])
        producer.poll(0)
        time.sleep(max(0.0, start + (i + step) / per_s - time.monotonic()))
    assert producer.flush(30) == 0


def produce_raw(bootstrap: str, topic: str, key: bytes, value: bytes, ts: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    producer.produce(topic, value=value, key=key, timestamp=ts)
    assert producer.flush(10) == 0


def read_topic(
    bootstrap: str, topic: str, expect: int, timeout: float = 60.0, settle: float = 1.5
) -> list[Any]:
    """Read ``topic`` from the start with read_committed until ``expect`` records arrived
    (then ``settle`` more seconds to catch extras) or ``timeout``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if len(out) >= expect:
                settle_until = settle_until or time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
            for msg in consumer.consume(5000, 0.2):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def decode_ledger(messages: list[Any]) -> dict[str, list[dict[str, Any]]]:
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for msg in messages:
        entry = codec.decode(msg.value())
        by_account[entry["account_id"]].append(entry)
    for entries in by_account.values():
        entries.sort(key=lambda e: e["seq"])
    return dict(by_account)


def pure_fold(
    inp: Input, extra: Iterable[tuple[str, str, bytes, int]] = ()
) -> dict[str, list[dict[str, Any]]]:
    """The engine applied to the same input, per account in produced order (no Kafka)."""
    engine = DomainEngine.from_files()
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    states: dict[str, Any] = {}
    ledger: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, acct, value, ts in [*inp.commands, *inp.usage, *extra]:
        is_usage = topic.endswith("usage-events")
        try:
            record = ucodec.decode(value) if is_usage else ccodec.decode(value)
        except Exception:
            continue
        state = states.get(acct)
        if state is None:
            state = states[acct] = engine.new_state(acct)
            state.attach_charges(ChargeWindow())  # corrections, as the processor's id store
        try:
            step = (engine.apply_usage if is_usage else engine.apply_command)(state, record, ts)
        except Exception:
            continue
        ledger[acct].extend(dict(e) for e in step.entries)
    return dict(ledger)


def normalise(ledger: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Entries as they look after an Avro round trip, so fold output compares with the topic."""
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    return {acct: [codec.decode(codec.encode(e)) for e in es] for acct, es in ledger.items()}


def debits(ledger: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {
        acct: sum(e["amount"] for e in entries if e["type"] in {"USAGE_DEBIT", "OVERAGE"})
        for acct, entries in ledger.items()
    }


class Worker:
    """``python -m pipeline.worker`` as a subprocess (what ``metering run processor`` runs);
    with ``--fault-*`` options, ``faulty_worker.py`` (the same worker, faults injected)."""

    def __init__(
        self, bootstrap: str, topics: TopicNames, app_id: str, workdir: Path, *extra: str
    ) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"worker-{app_id}-{self.port}.log"
        self.data_dir = workdir / f"data-{self.port}"
        self.args = worker_command(
            bootstrap,
            topics.prefix,
            6,
            self.port,
            self.data_dir,
            "--app-id",
            f"{topics.prefix}{app_id}",
            "--session-timeout",
            "6",
            "--sweep-interval",
            "0",
            "--commit-interval",
            "0.1",
            "--log-level",
            os.environ.get("METERING_TEST_WORKER_LOGLEVEL", "warning"),
            *extra,
        )
        if any(arg.startswith("--fault-") for arg in extra):  # the test-only faulty worker
            self.args[1:3] = [str(Path(__file__).with_name("faulty_worker.py"))]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, cwd=REPO, env=env)
        log.close()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def processed(self) -> int:
        """Records this worker process applied so far (0 while starting or unreachable)."""
        try:
            text = self.metrics()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("metering_processor_events_processed_total "):
                return int(float(line.split()[-1]))
        return 0

    def gauge(self, name: str) -> int:
        """A metric of this worker process (0 while starting or unreachable)."""
        try:
            text = self.metrics()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return int(float(line.split()[-1]))
        return 0

    def wait_restored(self, partitions: int = 6, timeout: float = 60.0) -> None:
        """Until this worker owns ``partitions`` partitions restored and checked against the
        ledger (so it is ready to process)."""
        deadline = time.monotonic() + timeout
        while self.gauge("metering_processor_verified_partitions") < partitions:
            assert time.monotonic() < deadline, f"worker never restored; see {self.log_path}"
            assert self.proc is not None and self.proc.poll() is None, (
                f"worker died: {self.log_path}"
            )
            time.sleep(0.05)

    def wait_processing(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.processed() == 0:
            assert time.monotonic() < deadline, f"worker never processed; see {self.log_path}"
            assert self.proc is not None and self.proc.poll() is None, (
                f"worker died: {self.log_path}"
            )
            time.sleep(0.05)

    def assigned(self, topic: str) -> set[int]:
        """Partitions of ``topic`` this worker currently owns (from its lag gauges)."""
        try:
            text = self.metrics()
        except OSError:
            return set()
        prefix = 'metering_processor_consumer_lag{partition="'
        return {
            int(line[len(prefix) :].split('"', 1)[0])
            for line in text.splitlines()
            if line.startswith(prefix) and f'topic="{topic}"' in line
        }

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            body: bytes = r.read()
            return body.decode()
