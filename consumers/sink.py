"""Exactly-once Kafka -> ClickHouse sink for ``usage-events`` and ``credit-ledger``.

Loop: consume, decode (one injected function per topic), append rows per partition, and when
100k rows or 1 s accumulate, flush. A flush, for the batches cut (see :mod:`consumers.batching`):

1. commits each batch's first offset with its range as metadata (the *intent*),
2. inserts each batch with ``insert_deduplication_token`` = topic/partition/first-last,
3. commits ``last + 1``.

A crash anywhere replays the intended range with the same token, which ClickHouse drops as a
duplicate block (the rollup views too). A record the sink cannot decode is counted
(``SinkStats.dead``), logged and skipped, never dead-lettered: each input has one DLQ writer,
and for usage events that is the processor (which dead-letters what it cannot decode or price,
with the original key and headers); the ledger is written by the processor alone. The skipped
offsets still count in the range, so the batch stays deterministic.

The inserts of a flush run on a background thread, so batch N is inserted while batch N+1 is
consumed (chDB and the Kafka client release the GIL). Kafka commits stay on the polling
thread. At most one flush is in flight and the next one starts only after the previous one
committed its end offsets, so the commits keep exactly the sequential order above; a
rebalance finishes the in-flight flush before partitions change hands.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.batching import Batch, BatchAccumulator, DeadRecord, parse_intent
from consumers.inserts import (
    Decoder,
    NativePart,
    Route,
    default_decoders,
    insert_native,
    insert_rows,
    prepare_native,
    routes_for,
)
from consumers.native_avro import NativeAvro
from metering.logs import kafka_client_logging
from metering.metrics import Metric, counter, gauge
from metering.offset_commit import commit_offsets
from metering.topics import TopicNames

log = logging.getLogger("metering.sink")


DEFAULT_MAX_ROWS = 100_000

EAGER_ROWS = 25_000
"""With no insert in flight, flush as soon as this many rows wait (not only at ``max_rows`` or
``max_wait``), so ClickHouse never idles while a backlog builds: a 300k-row burst then starts
inserting after 25k rows instead of 100k, and the cut sizes follow the insert speed."""

CONSUMER_TUNING: dict[str, Any] = {
    # Prefetch deep (bounded by bytes): with the default 100k-message floor the fetcher idles
    # between fetches and caps a 6-partition topic near 170k msgs/s; this doubles it.
    "queued.min.messages": 1_000_000,
    "queued.max.messages.kbytes": 65_536,
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
    "fetch.min.bytes": 1,
    "fetch.wait.max.ms": 100,
}


@dataclass(frozen=True, slots=True)
class _Flight:
    """A flush whose intents are committed and whose inserts run on the flush thread."""

    batches: list[Batch]
    future: Future[None]


@dataclass(slots=True)
class SinkStats:
    rows: int = 0
    dead: int = 0
    batches: int = 0
    first_message_at: float | None = None
    last_flush_at: float | None = None
    per_table: dict[str, int] = field(default_factory=dict)

    def families(self) -> list[Metric]:
        """For ``metering run sink --metrics-port`` (``metering.metrics``)."""
        return [
            counter(
                "metering_sink_rows_inserted_total",
                "Rows inserted into ClickHouse, by table.",
                {(table,): n for table, n in self.per_table.items()},
                ["table"],
            ),
            counter("metering_sink_batches_total", "Batches inserted.", self.batches),
            counter(
                "metering_sink_undecodable_total",
                "Records the sink could not decode and skipped (the processor dead-letters them).",
                self.dead,
            ),
            gauge(
                "metering_sink_last_flush_age_seconds",
                "Seconds since the last flush committed (-1 before the first).",
                -1.0 if self.last_flush_at is None else time.monotonic() - self.last_flush_at,
            ),
        ]


class ClickHouseSink:
    """One sink instance: a Kafka consumer in group ``group`` plus a ClickHouse client."""

    def __init__(
        self,
        *,
        bootstrap: str,
        client: Client,
        topics: TopicNames,
        decoders: Mapping[str, Decoder] | None = None,
        group: str = "metering-clickhouse-sink",
        max_rows: int = DEFAULT_MAX_ROWS,
        max_wait_s: float = 1.0,
        eager_rows: int = EAGER_ROWS,
        instance_id: str | None = None,
        native_avro: bool = True,
        insert_clients: Sequence[Client] = (),
    ) -> None:
        """``decoders`` replaces the project codec (and turns native Avro loading off).

        ``insert_clients``: more clients for the same database, so a flush inserts that many
        more partitions' batches in parallel (all of them still land before the commit).
        ``eager_rows``: see :data:`EAGER_ROWS`.
        """
        self.client = client
        self._free_clients: queue.SimpleQueue[Client] = queue.SimpleQueue()
        for c in (client, *insert_clients):
            self._free_clients.put(c)
        self._insert_pool = ThreadPoolExecutor(
            max_workers=1 + len(insert_clients), thread_name_prefix="sink-insert"
        )
        self._stats_lock = threading.Lock()
        native: NativeAvro | None = None
        if decoders is None:
            decoders, native = default_decoders(topics)
        self.routes = routes_for(topics, decoders, native if native_avro else None)
        self.acc = BatchAccumulator(max_rows=max_rows, max_wait_s=max_wait_s)
        self.stats = SinkStats()
        self._assigned: set[tuple[str, int]] = set()
        self._at_eof: set[tuple[str, int]] = set()
        self._stop = False
        self._fast_header: dict[str, bytes] = {}
        """Per native topic: the last accepted 5-byte framing, checked by one compare."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-flush")
        # Builds the next batch's Avro container while ClickHouse ingests the current one.
        self._prep_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-prepare")
        self._inflight: _Flight | None = None
        self.eager_rows = eager_rows
        config: dict[str, Any] = {}
        if instance_id:
            # Static membership: a restarted sink takes its partitions back at once instead
            # of waiting a session timeout for its crashed predecessor to be evicted.
            config["group.instance.id"] = instance_id
        self.consumer = Consumer(
            {
                **config,
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                **kafka_client_logging("sink"),
                "enable.partition.eof": True,
                **CONSUMER_TUNING,
            }
        )

    # -- rebalance -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._wait_inflight()
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            intent = parse_intent(tp.metadata)
            if intent is not None and tp.offset == intent[0]:
                log.warning("replaying in-flight batch %s[%d] %s", tp.topic, tp.partition, intent)
                self.acc.set_replay((tp.topic, tp.partition), *intent)
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned |= keys
        self._at_eof -= keys

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The in-flight flush commits for these partitions: let it finish while we own them.
        self._wait_inflight()
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.acc.drop(keys)
        self._assigned -= set(keys)
        self._at_eof -= set(keys)

    # -- main loop -----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop = True

    @property
    def caught_up(self) -> bool:
        """Every assigned partition is at its end and nothing is buffered."""
        return self.at_end and self.acc.empty and self._inflight is None

    @property
    def at_end(self) -> bool:
        """Every assigned partition has been read to its end (buffers may hold rows)."""
        return bool(self._assigned) and self._at_eof >= self._assigned

    def run(self, *, exit_when_caught_up: bool = False, max_seconds: float | None = None) -> int:
        self.consumer.subscribe(
            list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self._stop:
                # Take what is queued without waiting (a batch call would sit out its timeout
                # whenever fewer than num_messages are buffered); block briefly only when idle.
                msgs = self.consumer.consume(num_messages=10_000, timeout=0)
                if not msgs:
                    msgs = self.consumer.consume(num_messages=1, timeout=0.1)
                if msgs:
                    self._ingest(msgs)
                if self._inflight is not None and self._inflight.future.done():
                    self._wait_inflight()  # commit its end offsets promptly
                if self.acc.due() or (self._inflight is None and self.acc.rows >= self.eager_rows):
                    self._flush_async()
                if exit_when_caught_up and self.at_end:
                    # Nothing more to wait for: flush the tail now rather than after max_wait.
                    self.flush()
                    if self.caught_up:
                        break
                if deadline is not None and time.monotonic() > deadline:
                    break
            self.flush()
        finally:
            try:
                self._wait_inflight()
            finally:
                self._pool.shutdown(wait=True)
                self._prep_pool.shutdown(wait=True)
                self._insert_pool.shutdown(wait=True)
                self.consumer.close()
        return self.stats.rows

    def _ingest(self, msgs: list[Message]) -> None:
        """The hot loop: runs of one partition's well-framed native records go in as lists.

        Everything else (errors and EOF events, decoded routes, replaying partitions, records
        whose framing differs from the last accepted one) takes the per-record :meth:`_handle`.
        """
        if self.stats.first_message_at is None:
            self.stats.first_message_at = time.monotonic()
        acc = self.acc
        run_topic = ""
        run_partition = -1
        fast = False
        header = b""
        values: list[bytes] = []
        offsets: list[int] = []
        for msg in msgs:
            if msg.error() is None:
                partition = msg.partition()
                topic = msg.topic()
                if partition != run_partition or topic != run_topic:
                    if offsets:
                        acc.extend((run_topic, run_partition), offsets, values)
                        values, offsets = [], []
                    run_topic, run_partition = topic, partition
                    key = (topic, partition)
                    self._at_eof.discard(key)
                    fast = self.routes[topic].native is not None and not acc.replaying(key)
                    header = self._fast_header.get(topic, b"")
                if fast:
                    value = msg.value()
                    if value is not None and value[:5] == header:
                        values.append(value)
                        offsets.append(msg.offset())
                        continue
            if offsets:
                acc.extend((run_topic, run_partition), offsets, values)
                values, offsets = [], []
            self._handle(msg)
            run_partition = -1  # re-evaluate the run state (EOF, learned header, replay)
        if offsets:
            acc.extend((run_topic, run_partition), offsets, values)

    def _handle(self, msg: Message) -> None:
        err = msg.error()
        key = (msg.topic(), msg.partition())
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._at_eof.add(key)
                return
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error: %s", err)
            return
        self._at_eof.discard(key)
        if self.stats.first_message_at is None:
            self.stats.first_message_at = time.monotonic()
        route = self.routes[key[0]]
        offset: int = msg.offset()
        value = msg.value()
        try:
            if value is None:
                raise ValueError("tombstone (null value) on an append-only topic")
            row: Any
            if route.native is not None:
                route.native.schema_id(value)
                row = value
                self._fast_header[key[0]] = value[:5]
            else:
                row = route.build(route.decode(value), key[1], offset)
        except Exception as exc:
            self._skip_poison(key[0], key[1], offset, exc)
            row = DeadRecord(offset, exc)
        self.acc.add(key, offset, row)

    def _skip_poison(self, topic: str, partition: int, offset: int, error: BaseException) -> None:
        """Count and skip a record the sink cannot decode (the processor dead-letters it)."""
        log.warning("skipped undecodable record %s[%d]@%d: %r", topic, partition, offset, error)
        self.stats.dead += 1

    def _wait_inflight(self) -> None:
        """Finish the in-flight flush: wait for its inserts, then commit its end offsets.

        Kafka commits happen only here and in :meth:`_commit_intents`, on the thread that
        polls the consumer (a synchronous commit from another thread can stall behind a
        blocking ``consume``). An insert error is re-raised and nothing is committed.
        """
        flight, self._inflight = self._inflight, None
        if flight is None:
            return
        flight.future.result()
        done = [
            TopicPartition(b.topic, b.partition, b.next_offset, metadata="") for b in flight.batches
        ]
        commit_offsets(self.consumer, done)
        self.stats.last_flush_at = time.monotonic()

    def _commit_intents(self, batches: list[Batch]) -> list[Future[list[NativePart]]] | None:
        """Record the ranges (step 1); the payloads start building meanwhile. None: lost."""
        prepared = [self._prep_pool.submit(self._prepare, b) for b in batches]
        intents = [
            TopicPartition(b.topic, b.partition, b.first_offset, metadata=b.intent) for b in batches
        ]
        try:
            commit_offsets(self.consumer, intents)
        except KafkaException as exc:
            # Lost the partitions (rebalance): the next owner re-reads them; insert nothing.
            log.warning("intent commit failed, dropping %d batches: %s", len(batches), exc)
            for future in prepared:
                future.cancel()
            return None
        return prepared

    def _flush_async(self) -> None:
        """Finish the previous flush, cut, record intents, insert on the flush thread."""
        self._wait_inflight()
        batches = self.acc.cut()
        if not batches:
            return
        prepared = self._commit_intents(batches)
        if prepared is not None:
            future = self._pool.submit(self._insert_batches, batches, prepared)
            self._inflight = _Flight(batches, future)

    def flush(self) -> None:
        """Cut and flush everything flushable now, synchronously."""
        self._wait_inflight()
        batches = self.acc.cut()
        if not batches:
            return
        prepared = self._commit_intents(batches)
        if prepared is not None:
            self._inflight = _Flight(batches, Future())
            try:
                self._insert_batches(batches, prepared)
            except BaseException as exc:
                self._inflight.future.set_exception(exc)
            else:
                self._inflight.future.set_result(None)
            self._wait_inflight()

    def _insert_batches(
        self, batches: list[Batch], prepared: list[Future[list[NativePart]]]
    ) -> None:
        """Steps 2-3: every batch inserted (partitions in parallel), then the DLQ flushed."""
        inserts = [
            self._insert_pool.submit(self._insert_with_free_client, batch, future)
            for batch, future in zip(batches, prepared, strict=True)
        ]
        errors = [err for f in inserts if (err := f.exception()) is not None]
        if errors:
            raise errors[0]

    def _prepare(self, batch: Batch) -> list[NativePart]:
        return prepare_native(self.routes[batch.topic], batch)

    def _insert_with_free_client(self, batch: Batch, prepared: Future[list[NativePart]]) -> None:
        client = self._free_clients.get()
        try:
            self._insert(batch, prepared.result(), client)
        finally:
            self._free_clients.put(client)

    def _insert(
        self, batch: Batch, parts: list[NativePart] | None = None, client: Client | None = None
    ) -> None:
        client = client or self.client
        inserted = 0
        route = self.routes[batch.topic]
        if not batch.rows:
            pass
        elif route.native is not None:
            if parts is None:
                parts = self._prepare(batch)
            inserted = insert_native(client, route, batch, parts, self._decode_native_rows)
        else:
            insert_rows(client, route, batch.rows, batch.token)
            inserted = len(batch.rows)
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.rows += inserted
            table = self.stats.per_table
            table[route.table] = table.get(route.table, 0) + inserted

    def _decode_native_rows(
        self,
        route: Route,
        topic: str,
        partition: int,
        values: list[bytes],
        offsets: list[int],
    ) -> list[tuple[Any, ...]]:
        """The slow path for records ClickHouse could not parse: find and skip the bad ones."""
        rows = []
        for value, offset in zip(values, offsets, strict=True):
            try:
                rows.append(route.build(route.decode(value), partition, offset))
            except Exception as exc:
                self._skip_poison(topic, partition, offset, exc)
        return rows
