"""``metering run projection``: consume ``credit-ledger`` and keep the Redis projection current.

Loop: consume a batch -> decode (poison records go to ``credit-ledger.dlq``) -> apply
(one pipelined round of EVALSHA) -> flush the DLQ -> commit offsets. Offsets are committed
only after Redis acknowledged, so a crash re-delivers and the idempotent script skips what
was applied. ``enable.auto.commit`` is off and the consumer reads committed data only.

Gap policy: an entry whose seq skips ahead of the stored seq is NOT applied. Its partition's
offset is not committed past it; the partition is paused and re-read from that offset with
exponential back-off (1 s .. 60 s), each time logged at ERROR and counted in
``projection_gaps_total``. The projection therefore never advances silently past a hole;
``metering projection rebuild --live`` (or the missing entries arriving) clears it.

Static membership (``--instance-id``, Kafka's ``group.instance.id``): a consumer restarted
after a crash (kill -9) with the same id takes its partitions back at once, instead of the
group waiting out the dead member's session timeout (``session.timeout.ms``, 45 s) with
those partitions unread and Redis stale. Give every consumer of the group its own stable
id (e.g. the pod or host name). A static member does not leave the group on shutdown
either: a consumer stopped for good keeps its partitions until the session timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from metering.topics import TopicNames
from projections.apply import Projector
from projections.keys import prefix_from_env

log = logging.getLogger("metering.projection")

Decoder = Callable[[bytes], dict[str, Any]]

GAP_BACKOFF_MIN_S = 1.0
GAP_BACKOFF_MAX_S = 60.0
REDIS_BACKOFF_MAX_S = 5.0


@dataclass(slots=True)
class Metrics:
    """Counters exported as Prometheus text (``--metrics-port``) and logged periodically."""

    batches: int = 0
    records: int = 0
    entries_applied: int = 0
    entries_skipped: int = 0
    gaps: int = 0
    dead_lettered: int = 0
    redis_errors: int = 0
    commits: int = 0
    paused_partitions: int = 0

    def prometheus(self) -> str:
        lines = []
        for name, value in asdict(self).items():
            metric = f"projection_{name}" + ("" if name == "paused_partitions" else "_total")
            lines.append(f"{metric} {value}")
        return "\n".join(lines) + "\n"


def codec_decoder() -> Decoder:
    """The LedgerEntry codec (decodes by writer schema id, resolves to the reader schema)."""
    from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
    from metering.config import load_settings

    return AvroCodec(load_registry(load_settings()), LEDGER_ENTRY).decode


@dataclass(slots=True)
class _Paused:
    offset: int
    resume_at: float
    backoff: float


@dataclass(slots=True)
class _Batch:
    entries: list[dict[str, Any]] = field(default_factory=list)
    positions: list[tuple[int, int]] = field(default_factory=list)
    """(partition, offset) of each entry."""
    ends: dict[int, int] = field(default_factory=dict)
    """partition -> next offset after the batch (decoded or dead-lettered)."""


class ProjectionConsumer:
    """One consumer of the group; Kafka spreads partitions over several of these."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: TopicNames,
        client: redis.Redis,
        prefix: str,
        decode: Decoder,
        group_id: str = "metering-projection",
        batch_size: int = 2000,
        poll_timeout_s: float = 0.5,
        instance_id: str | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.projector = Projector(client, prefix)
        self.decode = decode
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.metrics = Metrics()
        self._paused: dict[int, _Paused] = {}
        self._backoff: dict[int, float] = {}
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            "log_level": 3,
        }
        if instance_id:
            config["group.instance.id"] = instance_id  # static membership (module docstring)
        config.update(extra_config or {})
        self.consumer = Consumer(config)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 3}
        )
        self.consumer.subscribe([topics.credit_ledger], on_revoke=self._on_revoke)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._paused.pop(tp.partition, None)
            self._backoff.pop(tp.partition, None)
        self.metrics.paused_partitions = len(self._paused)

    # -- one batch --------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Consume, apply and commit one batch; return the number of records handled."""
        self._resume_due()
        messages = self.consumer.consume(self.batch_size, self.poll_timeout_s)
        if not messages:
            return 0
        batch = self._decode(messages)
        self._apply(batch)
        self.metrics.batches += 1
        self.metrics.records += len(messages)
        return len(messages)

    def _decode(self, messages: list[Message]) -> _Batch:
        batch = _Batch()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():  # e.g. fenced: another consumer runs with our instance id
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition in self._paused:
                continue  # fetched before the pause took effect; re-read after the gap clears
            batch.ends[partition] = offset + 1
            try:
                entry = self.decode(msg.value())
                if not isinstance(entry, dict) or "seq" not in entry or "account_id" not in entry:
                    raise ValueError("decoded record is not a LedgerEntry")
            except Exception as exc:
                self._dead_letter(msg, exc)
                continue
            batch.entries.append(entry)
            batch.positions.append((partition, offset))
        return batch

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        headers = [
            ("error.class", type(exc).__name__.encode()),
            ("error.message", str(exc)[:1000].encode("utf-8", "replace")),
            ("source.topic", str(msg.topic()).encode()),
            ("source.partition", str(msg.partition()).encode()),
            ("source.offset", str(msg.offset()).encode()),
        ]
        self.producer.produce(
            self.topics.credit_ledger_dlq, key=msg.key(), value=msg.value(), headers=headers
        )
        self.metrics.dead_lettered += 1
        log.error(
            "poison record %s[%s]@%s -> %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            self.topics.credit_ledger_dlq,
            exc,
        )

    def _apply(self, batch: _Batch) -> None:
        delay = 0.05
        while True:
            try:
                result = self.projector.apply_batch(batch.entries)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Nothing is committed; the same batch is re-sent (the script is idempotent).
                self.metrics.redis_errors += 1
                log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, REDIS_BACKOFF_MAX_S)
        self.metrics.entries_applied += result.applied
        self.metrics.entries_skipped += result.skipped
        ends = dict(batch.ends)
        gapped: set[int] = set()
        for gap in result.gaps:
            partition, offset = batch.positions[gap.index]
            self.metrics.gaps += 1
            log.error(
                "seq gap for account %s: stored seq %d, next entry has seq %d "
                "(%s[%d]@%d); not applied, partition held",
                gap.account,
                gap.stored_seq,
                gap.got_seq,
                self.topics.credit_ledger,
                partition,
                offset,
            )
            ends[partition] = min(ends.get(partition, offset), offset)
            gapped.add(partition)
        for partition in gapped:
            self._hold(partition, ends[partition])
        for partition in batch.ends.keys() - gapped:
            self._backoff.pop(partition, None)
        if self.producer.flush(30) != 0:
            raise RuntimeError("dead-letter records not acknowledged; not committing")
        if ends:
            topic = self.topics.credit_ledger
            offsets = [TopicPartition(topic, p, o) for p, o in sorted(ends.items())]
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self.metrics.commits += 1

    def _hold(self, partition: int, offset: int) -> None:
        """Pause the partition at the gap; it is re-read from ``offset`` after a back-off."""
        backoff = self._backoff.get(partition, GAP_BACKOFF_MIN_S)
        self._backoff[partition] = min(backoff * 2, GAP_BACKOFF_MAX_S)
        self.consumer.pause([TopicPartition(self.topics.credit_ledger, partition)])
        self._paused[partition] = _Paused(offset, time.monotonic() + backoff, backoff)
        self.metrics.paused_partitions = len(self._paused)

    def _resume_due(self) -> None:
        now = time.monotonic()
        for partition, state in list(self._paused.items()):
            if state.resume_at > now:
                continue
            tp = TopicPartition(self.topics.credit_ledger, partition, state.offset)
            self.consumer.resume([tp])
            self.consumer.seek(tp)
            del self._paused[partition]
        self.metrics.paused_partitions = len(self._paused)

    def run(self, stop: threading.Event, log_every_s: float = 30.0) -> None:
        next_log = time.monotonic() + log_every_s
        while not stop.is_set():
            self.poll_once()
            if time.monotonic() >= next_log:
                log.info("projection metrics %s", json.dumps(asdict(self.metrics)))
                next_log = time.monotonic() + log_every_s

    def close(self) -> None:
        self.producer.flush(10)
        self.consumer.close()


def _serve_metrics(metrics: Metrics, port: int) -> ThreadingHTTPServer:
    """A tiny Prometheus text endpoint on ``/metrics`` in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.prometheus().encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def build_parser() -> argparse.ArgumentParser:
    """The options of ``metering run projection``."""
    parser = argparse.ArgumentParser(
        prog="metering run projection",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--group", default="metering-projection", help="consumer group id")
    parser.add_argument(
        "--instance-id",
        default=None,
        help="static group membership (Kafka group.instance.id), unique and stable per "
        "consumer of the group: restarted after a crash with the same id, the consumer takes "
        "its partitions back at once instead of after the session timeout (45 s)",
    )
    parser.add_argument("--topic-prefix", default="", help="TopicNames prefix (side-by-side runs)")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: list[str]) -> int:
    """``metering run projection [--group G] [--instance-id ID] [--topic-prefix P]
    [--metrics-port N]``."""
    from metering.config import load_settings

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)
    worker = ProjectionConsumer(
        bootstrap=settings.kafka_bootstrap,
        topics=TopicNames(args.topic_prefix),
        client=client,
        prefix=prefix_from_env(),
        decode=codec_decoder(),
        group_id=args.group,
        batch_size=args.batch_size,
        instance_id=args.instance_id,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = _serve_metrics(worker.metrics, args.metrics_port) if args.metrics_port else None
    log.info(
        "projection consuming %s into %s (group %s, instance %s)",
        worker.topics.credit_ledger,
        settings.redis_url,
        args.group,
        args.instance_id or "dynamic",
    )
    try:
        worker.run(stop)
    finally:
        worker.close()
        client.close()
        if server is not None:
            server.shutdown()
    return 0
