"""Running one processor worker for ``metering bench processor``: the subprocess, a ledger
counter reading read_committed from the topic's start, the worker's own counters, and the raw
consume-and-decode baseline."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from metering.avro import LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
from metering.net import free_port
from metering.topics import TopicNames
from pipeline.worker import worker_command


class LedgerCounter(threading.Thread):
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


def metric(port: int, name: str) -> int:
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


def raw_baseline(bootstrap: str, topic: str, partitions: int, n: int) -> float:
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


@dataclass
class Running:
    """A worker subprocess and a ledger counter reading from the topic's start."""

    port: int
    counter: LedgerCounter
    process: subprocess.Popen[bytes]
    log_path: Path

    def check(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit("worker died: " + self.log_path.read_text()[-2000:])


@contextlib.contextmanager
def running_worker(
    a: argparse.Namespace, bootstrap: str, topics: TopicNames, data: Path, log_path: Path
) -> Iterator[Running]:
    """A worker on ``data`` and its ledger counter, both stopped on the way out."""
    port = free_port()
    args = worker_command(
        bootstrap,
        topics.prefix,
        a.partitions,
        port,
        data,
        "--sweep-interval",
        "0",
        "--log-level",
        "warning",
        "--batch-max",
        str(a.batch_max),
        "--commit-interval",
        str(a.commit_interval),
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=log, env=dict(os.environ))
        counter = LedgerCounter(bootstrap, topics.credit_ledger, a.partitions, False)
        counter.latencies = None  # type: ignore[assignment]
        counter.start()
        try:
            yield Running(port, counter, process, log_path)
        finally:
            counter.stop.set()
            counter.join()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_applied(run: Running, records: int, expected: int, timeout: float = 600) -> None:
    """Until the worker applied ``records`` input records and the ledger holds every entry it
    wrote (near the fold's ``expected`` count the worker is asked; every few ms would slow it)."""
    deadline = time.monotonic() + timeout
    while True:
        if run.counter.count >= expected - 100:
            if metric(run.port, PROCESSED) >= records and run.counter.count >= metric(
                run.port, LEDGER_ENTRIES
            ):
                return
            time.sleep(0.02)
        else:
            time.sleep(0.005)
        run.check()
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the worker did not finish: {metric(run.port, PROCESSED)} of {records} records "
                f"applied, {run.counter.count} ledger entries of about {expected}; its log ends:\n"
                + run.log_path.read_text()[-3000:]
            )
