"""``metering bench processor --events 200000 --json``: throughput and latency, exactly-once on.

1. Throughput: plans for every account, then ``--events`` usage events are produced up front;
   a worker subprocess starts; the clock runs from its first processed record until a
   read_committed consumer has seen every ledger entry the engine's fold predicts.
2. Baseline, same run: confluent-kafka consume + fastavro decode of the same usage topic.
3. Latency: events produced at a fixed ``--rate`` (default 5,000/s) with ``occurred_at`` = send
   time; latency = when the entry is readable (read_committed) minus ``occurred_at``.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from metering.avro import CREDIT_COMMAND, LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
from metering.config import load_settings
from metering.net import free_port
from metering.topics import TopicNames, create_topics, delete_topics
from pipeline.engine_adapter import DomainEngine
from pipeline.worker import worker_command

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-haiku", None]


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 10,
            "enable.idempotence": True,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )


def _produce(producer: Producer, topic: str, key: str, value: bytes, ts: int) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key.encode(), timestamp=ts)
            return
        except BufferError:
            producer.poll(0.01)


def _usage(rnd: random.Random, i: int, account: str, at: int, prefix: str = "ev") -> dict[str, Any]:
    return {
        "event_id": f"{prefix}-{i}",
        "account_id": account,
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


class _LedgerCounter(threading.Thread):
    """Counts read_committed ledger entries; records latency of entries caused by ``lat-*``."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, from_end: bool) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        if from_end:
            for tp in tps:
                tp.offset = self.consumer.get_watermark_offsets(tp, timeout=10)[1]
        else:
            for tp in tps:
                tp.offset = 0
        self.consumer.assign(tps)
        self.codec = AvroCodec(load_registry(), LEDGER_ENTRY)
        self.count = 0
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        decode = self.codec.decode
        while not self.stop.is_set():
            msgs = self.consumer.consume(10000, 0.05)
            now = time.time() * 1000
            for msg in msgs:
                if msg.error() is None:
                    self.count += 1
                    if self.latencies is not None and msg.value()[5:6]:
                        entry = decode(msg.value())
                        if entry["cause_id"].startswith("lat-") and entry["type"] == "USAGE_DEBIT":
                            self.latencies.append(now - entry["occurred_at"])
        self.consumer.close()


def _metric(port: int, name: str) -> int:
    """A counter of the worker's ``/metrics`` (0 while it is not up)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f"{name} "):
                    return int(float(line.split()[-1]))
    except OSError:
        return 0
    return 0


PROCESSED = "metering_processor_events_processed_total"
LEDGER_ENTRIES = "metering_processor_ledger_entries_total"


def _raw_baseline(bootstrap: str, topic: str, partitions: int, n: int) -> float:
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    start = time.perf_counter()
    while seen < n:
        for msg in consumer.consume(10000, 1.0):
            if msg.error() is None:
                codec.decode(msg.value())
                seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return n / elapsed


ZIPF_S = 1.4
"""Zipf exponent of ``--skew zipf`` over 1,000 accounts: the busiest carries about a third."""
EVENT_TIME_SPAN_MS = 3_600_000
"""The throughput input's event times span one hour (id windows, clocks and expiry move)."""


def _account_picker(rnd: random.Random, accounts: list[str], skew: str) -> Any:
    if skew == "uniform":
        return lambda: accounts[rnd.randrange(len(accounts))]
    weights = [1.0 / (k + 1) ** ZIPF_S for k in range(len(accounts))]
    cumulative = list(itertools.accumulate(weights))
    return lambda: rnd.choices(accounts, cum_weights=cumulative)[0]


def _phase(a: argparse.Namespace, bootstrap: str, skew: str, latency: bool) -> dict[str, Any]:
    """One worker over fresh topics: throughput over ``a.events`` produced up front, the raw
    baseline over the same topic, and (``latency``) latency at a fixed rate."""
    topics = TopicNames(f"bench{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, topics, a.partitions)
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    rnd = random.Random(1)
    t0 = int(time.time() * 1000) - 2 * EVENT_TIME_SPAN_MS
    accounts = [f"acct-{i:05d}" for i in range(a.accounts)]
    pick = _account_picker(rnd, accounts, skew)

    # -- input, up front, and the fold's count of the entries it must produce --------------------
    engine = DomainEngine.from_files()
    states: dict[str, Any] = {}
    expected = 0
    producer = _producer(bootstrap)
    for i, acct in enumerate(accounts):
        cmd = {
            "command_id": f"plan-{acct}",
            "account_id": acct,
            "kind": "assign_plan",
            "plan_id": "enterprise" if i % 2 else "growth",
            "issued_at": t0,
        }
        states[acct] = engine.new_state(acct)
        expected += len(engine.apply_command(states[acct], cmd, t0).entries)
        _produce(producer, topics.credit_commands, acct, ccodec.encode(cmd), t0)
    producer.flush(60)
    per_account: dict[str, int] = {}
    for i in range(a.events):
        acct = pick()
        per_account[acct] = per_account.get(acct, 0) + 1
        at = t0 + 1 + i * EVENT_TIME_SPAN_MS // a.events
        record = _usage(rnd, i, acct, at)
        expected += len(engine.apply_usage(states[acct], record, at).entries)
        _produce(producer, topics.usage_events, acct, ucodec.encode(record), at)
    producer.flush(120)

    port = free_port()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = worker_command(
            bootstrap,
            topics.prefix,
            a.partitions,
            port,
            Path(tmp) / "data",
            "--sweep-interval",
            "0",
            "--log-level",
            "warning",
            "--batch-max",
            str(a.batch_max),
            "--commit-interval",
            str(a.commit_interval),
        )
        log = open(Path(tmp) / "worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(args, stdout=log, stderr=log, env=dict(os.environ))
        try:
            counter = _LedgerCounter(bootstrap, topics.credit_ledger, a.partitions, False)
            counter.latencies = None  # type: ignore[assignment]
            counter.start()
            while _metric(port, PROCESSED) == 0:
                if worker.poll() is not None:
                    raise SystemExit(
                        "worker died: " + (Path(tmp) / "worker.log").read_text()[-2000:]
                    )
                time.sleep(0.01)
            start = time.perf_counter()
            # Done when every input record is applied and every entry it wrote is committed.
            # (The fold's count is only a cross-check: the two input topics are fetched in no
            # fixed order, so a usage event may meet its account before the plan command does.)
            records = len(accounts) + a.events
            deadline = time.monotonic() + 600
            while True:
                # Near the fold's count, ask the worker (every few ms would slow it down).
                if counter.count >= expected - 100:
                    applied = _metric(port, PROCESSED) >= records
                    if applied and counter.count >= _metric(port, LEDGER_ENTRIES):
                        break
                    time.sleep(0.02)
                else:
                    time.sleep(0.005)
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit(f"the worker did not finish; see {Path(tmp) / 'worker.log'}")
            elapsed = time.perf_counter() - start
            expected = counter.count
            counter.stop.set()
            counter.join()
            events_per_s = a.events / elapsed

            raw = _raw_baseline(bootstrap, topics.usage_events, a.partitions, a.events)
            if latency:
                latencies = _latency(a, bootstrap, topics, producer, ucodec, rnd, accounts)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
            log.close()
    with contextlib.suppress(Exception):
        delete_topics(bootstrap, topics)
    return {
        "events": a.events,
        "ledger_entries": expected,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events_per_s),
        "raw_events_per_s": round(raw),
        "ratio": round(events_per_s / raw, 3),
        "busiest_account_share": round(max(per_account.values()) / a.events, 3),
        "event_time_span_s": EVENT_TIME_SPAN_MS // 1000,
        "latencies": sorted(latencies),
    }


def _latency(
    a: argparse.Namespace,
    bootstrap: str,
    topics: TopicNames,
    producer: Producer,
    ucodec: AvroCodec,
    rnd: random.Random,
    accounts: list[str],
) -> list[float]:
    """Ledger latency of events produced at ``a.rate`` a second (``occurred_at`` = send time)."""
    lat = _LedgerCounter(bootstrap, topics.credit_ledger, a.partitions, True)
    lat.start()
    total = int(a.rate * a.latency_seconds)
    begin = time.perf_counter()
    for i in range(total):
        target = begin + i / a.rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        acct = accounts[rnd.randrange(len(accounts))]
        now = int(time.time() * 1000)
        _produce(
            producer,
            topics.usage_events,
            acct,
            ucodec.encode(_usage(rnd, i, acct, now, "lat")),
            now,
        )
        producer.poll(0)
    producer.flush(30)
    deadline = time.monotonic() + 30
    while len(lat.latencies) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    lat.stop.set()
    lat.join()
    return lat.latencies


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="metering bench processor",
        description="Throughput and latency of one processor worker with exactly-once on, on "
        "fresh topics. Throughput: events produced up front, next to a raw consume and decode "
        "of the same topic. Latency: events sent at a fixed rate, timed until their ledger "
        "entries are readable. The last line of output is JSON.",
    )
    p.add_argument(
        "--events",
        type=int,
        default=200_000,
        metavar="N",
        help="usage events for the throughput phase (default: 200000)",
    )
    p.add_argument(
        "--accounts", type=int, default=1000, metavar="N", help="accounts (default: 1000)"
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=6,
        metavar="N",
        help="partitions of the fresh topics (default: 6)",
    )
    p.add_argument(
        "--rate",
        type=int,
        default=5000,
        metavar="N",
        help="events per second in the latency phase (default: 5000)",
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=8.0,
        metavar="SECONDS",
        help="length of the latency phase (default: 8)",
    )
    p.add_argument(
        "--batch-max",
        type=int,
        default=2000,
        metavar="N",
        help="the worker's --batch-max (default: 2000)",
    )
    p.add_argument(
        "--commit-interval",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="the worker's --commit-interval (default: 0.1)",
    )
    p.add_argument(
        "--skew",
        choices=["uniform", "zipf"],
        default="uniform",
        help="zipf: also a run where accounts are Zipf-distributed (the busiest carries about "
        "a third of the events), reported beside the uniform run's figures (default: uniform)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON result line")
    a = p.parse_args(argv)
    bootstrap = load_settings().kafka_bootstrap
    uniform = _phase(a, bootstrap, "uniform", latency=True)
    latencies = uniform.pop("latencies")

    def pct(q: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)
            if latencies
            else -1.0
        )

    result = {
        **uniform,
        "latency_rate_per_s": a.rate,
        "latency_samples": len(latencies),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "exactly_once": True,
    }
    if a.skew == "zipf":
        zipf = _phase(a, bootstrap, "zipf", latency=False)
        zipf.pop("latencies")
        zipf["vs_uniform"] = round(zipf["events_per_s"] / uniform["events_per_s"], 3)
        result["zipf"] = zipf
    if not a.json:
        print(
            f"processor: {result['events_per_s']:,} events/s vs raw {result['raw_events_per_s']:,}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
