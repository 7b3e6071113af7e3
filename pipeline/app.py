"""The faust app: both source topics, an account table, a sweep; we process and commit.

Exactly-once is done by *this* module rather than by faust's ``TransactionManager`` (see
``docs/processor.md`` for the faust findings). faust still owns the consumer group, the
per-partition transactional producers (transactional id ``{app_id}-{group}-{partition}``), the
RocksDB table and its restore from the changelog. ``BatchConsumer`` hands us whole fetches;
per batch and source partition we send, *under faust's own per-transaction lock*, every ledger
entry, alert, DLQ record and the changelog record of each touched account through that
partition's transactional producer, and note the batch's next offsets. Our commit loop adds
those offsets to the transaction and commits it under the same lock, so a transaction holds
whole batches and exactly their offsets. Replays after a crash start at committed offsets
over state restored from the committed changelog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition as TP
from rocksdict import WriteBatch

from metering.avro import (
    CREDIT_ALERT,
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    USAGE_EVENT,
    AvroCodec,
    load_registry,
)
from metering.topics import TopicNames
from pipeline import faust_fixes, table_store
from pipeline.config_reload import EngineSource, LiveEngine
from pipeline.core import BatchProcessor, Codecs, InMessage, PartitionOutput
from pipeline.fast_consumer import batch_consumer_class
from pipeline.id_store import IdStore, write_chunks
from pipeline.metrics import Metrics
from pipeline.restore import FAUST_KEY_PREFIX, RestoreMismatchError, RestoreVerifier
from pipeline.settings import ProcessorConfig

log = logging.getLogger("pipeline.app")

TABLE_NAME = "accounts"
IDS_TABLE_NAME = "event_ids"


@dataclass
class ProcessorApp:
    """The faust app plus the pieces tests and the worker poke at."""

    app: faust.App
    config: ProcessorConfig
    topics: TopicNames
    metrics: Metrics
    live: LiveEngine
    processor: BatchProcessor


def make_codecs(config: ProcessorConfig) -> Codecs:
    registry = load_registry(schema_dir=config.schema_dir)
    return Codecs(
        usage=AvroCodec(registry, USAGE_EVENT),
        command=AvroCodec(registry, CREDIT_COMMAND),
        ledger=AvroCodec(registry, LEDGER_ENTRY),
        alert=AvroCodec(registry, CREDIT_ALERT),
    )


def build_app(config: ProcessorConfig, source: EngineSource) -> ProcessorApp:
    """Create the faust app for ``config``; ``source`` builds (and rebuilds) the engine.

    Raises ``faust_fixes.UnsupportedFaustVersion`` on any faust-streaming but the pinned one."""
    faust_fixes.apply()
    table_store.register()
    topics = TopicNames(config.prefix)
    metrics = Metrics()
    live = LiveEngine(source, metrics)
    ids_ref: list[Any] = []
    id_store = IdStore(lambda partition: ids_ref[0].data._db_for_partition(partition))
    processor = BatchProcessor(topics, live.current, make_codecs(config), metrics, id_store)
    app = faust.App(
        config.app_id,
        broker=f"kafka://{config.bootstrap}",
        store=f"{table_store.SCHEME}://",  # RocksDB, rebuilt from the changelog on assignment
        processing_guarantee="exactly_once",
        datadir=str(config.data_dir),
        autodiscover=False,
        web_enabled=True,
        web_host=config.web_host,
        web_port=config.web_port,
        web_bind=config.web_host,
        broker_commit_interval=config.commit_interval_s,
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, config.batch_max * 2),
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        broker_max_poll_records=config.batch_max,  # = the largest batch we process
        broker_session_timeout=config.session_timeout_s,
        consumer_group_instance_id=config.instance_id,
        broker_heartbeat_interval=min(3.0, config.session_timeout_s / 4),
        stream_wait_empty=False,
    )
    sink_ref: list[_TransactionalSink] = []

    async def handle(batch: list[InMessage], generation: int) -> None:
        await sink_ref[0].handle(batch, generation)

    # Must be set before faust creates its consumer (lazily, at worker start).
    app.transport.Consumer = batch_consumer_class(
        frozenset({topics.usage_events, topics.credit_commands}),
        handle,
        delivery_delay_s=config.fault_delivery_delay_s,
        fetch_position=config.fault_fetch_position,
    )
    table = app.Table(
        TABLE_NAME,
        partitions=config.partitions,
        key_type=bytes,
        value_type=bytes,
        options={"driver": "rocksdict"},
    )
    ids_table = app.Table(
        IDS_TABLE_NAME,
        partitions=config.partitions,
        key_type=bytes,
        value_type=bytes,
        options={"driver": "rocksdict"},
        store=f"{table_store.IDS_SCHEME}:{IDS_TABLE_NAME}",  # "x://" alone is a false URL
    )
    ids_ref.append(ids_table)
    source_topic = app.topic(
        topics.usage_events,
        topics.credit_commands,
        key_serializer="raw",
        value_serializer="raw",
        partitions=config.partitions,
        internal=False,
    )
    sink = _TransactionalSink(app, table, ids_table, topics, metrics, processor, config.bootstrap)

    def load(partition: int, account_id: str) -> bytes | None:
        value: bytes | None = table.data._db_for_partition(partition).get(account_id.encode())
        return value

    sink.load = load
    sink_ref.append(sink)

    async def idle(stream: Any) -> None:
        # Subscribes the source topics (faust's assignor, tables and transactions key off the
        # agents' topics); the records themselves reach ``sink.handle`` via BatchConsumer.
        async for _ in stream:  # pragma: no cover - BatchConsumer never feeds it
            pass

    app.agent(source_topic, concurrency=1, name="process")(idle)

    async def commit_loop() -> None:
        # A plain loop rather than app.timer: under load a commit may outlast the interval,
        # and mode's timer then logs an "overlapping" warning ten times a second.
        while True:
            await asyncio.sleep(config.commit_interval_s)
            await sink.commit()

    app.task(commit_loop)

    async def on_revoked(*args: Any, **kwargs: Any) -> None:
        await sink.commit()

    app.on_partitions_revoked.connect(on_revoked)

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        sink.keep_verified({tp.partition for tp in assigned if tp.topic == topics.usage_events})

    app.on_partitions_assigned.connect(on_assigned)

    async def on_restored(*args: Any, **kwargs: Any) -> None:
        # Sent by faust's recovery once the changelog is read, before the streams resume.
        await sink.verify_restored()

    app.on_rebalance_complete.connect(on_restored)

    if config.sweep_interval_s:

        async def sweep() -> None:
            await sink.sweep(processor, int(time.time() * 1000))

        app.timer(config.sweep_interval_s, name="sweep")(sweep)

    async def reload_config() -> None:
        live.maybe_reload()

    app.timer(config.reload_interval_s, name="config_reload")(reload_config)

    async def metrics_view(web: Any, request: Any) -> Any:
        return web.text(metrics.render(_lag(app)), content_type="text/plain; version=0.0.4")

    app.page("/metrics")(metrics_view)

    return ProcessorApp(app, config, topics, metrics, live, processor)


class _TransactionalSink:
    """Processes fetched batches inside faust's per-partition transactions and commits them.

    Per source partition and batch, under faust's lock for that partition's transaction: load
    state, run the pure :class:`BatchProcessor`, send every output (ledger, alerts, DLQ, the
    changelog record of each touched account) through the partition's transactional producer,
    write RocksDB, and remember the next offset to commit. :meth:`commit` (a timer every
    ``commit_interval``, and on revocation) then, again under each lock, adds those offsets to
    the transaction and commits it, all partitions concurrently. A transaction therefore holds
    whole batches and exactly the offsets of the batches it holds.
    """

    def __init__(
        self,
        app: faust.App,
        table: Any,
        ids_table: Any,
        topics: TopicNames,
        metrics: Metrics,
        processor: BatchProcessor,
        bootstrap: str,
    ) -> None:
        self.app = app
        self.table = table
        self.ids_table = ids_table
        self.topics = topics
        self.metrics = metrics
        self.processor = processor
        self.load: Callable[[int, str], bytes | None] = lambda p, a: None
        self._pending: dict[int, tuple[Any, dict[TP, int]]] = {}
        """partition -> (the producer whose open transaction holds the output, next offsets)"""
        self._dropped: dict[TP, int] = {}
        """source partition -> the first offset of records fetched but dropped (rewound later)"""
        self._cache_generation: int | None = None
        """consumer generation of the last batch: the state cache is cleared when it changes"""
        self._verified: set[int] = set()
        """partitions whose restored state agrees with the ledger; only these are processed"""
        self.verifier = RestoreVerifier(
            bootstrap, topics, table, ids_table, processor, metrics, self.publish
        )

    def _transaction(self, partition: int) -> tuple[Any, Any]:
        group = self.app.assignor.group_for_topic(self.topics.usage_events)
        tid = f"{self.app.conf.id}-{group}-{partition}"
        producer = self.app.producer
        return producer._trn_locks[tid], producer._transaction_producers[tid]

    async def handle(self, batch: list[InMessage], generation: int) -> None:
        """Process one fetched batch (any partitions, fetch order) of the source topics."""
        by_partition: dict[int, list[InMessage]] = {}
        for msg in batch:
            part = by_partition.get(msg.partition)
            if part is None:
                by_partition[msg.partition] = [msg]
            else:
                part.append(msg)
        app = self.app
        consumer = app.consumer
        if generation != self._cache_generation:
            # A rebalance: partitions may have moved and been restored from the changelog since.
            self.processor.clear_cache()
            self._cache_generation = generation
        for partition, msgs in by_partition.items():
            try:
                lock, txp = self._transaction(partition)
            except KeyError:
                self._drop(msgs, "no transactional producer")
                continue
            async with lock:
                # A rebalance since the fetch: faust seeks to the committed offsets; the rewind
                # below covers the case where that seek already happened before this drop.
                if app.consumer_generation_id != generation or not consumer.flow_active:
                    self._drop(msgs, "rebalanced since the fetch")
                    continue
                if self._transaction(partition)[1] is not txp:
                    self._drop(msgs, "transactional producer replaced")
                    continue
                if partition not in self._verified:
                    self._drop(msgs, "state not verified against the ledger")
                    continue
                msgs = self._unprocessed(partition, msgs)
                if not msgs:
                    continue
                out = self.processor.process(msgs, self.load)[partition]
                await self._send(txp, partition, out)
                pending = self._pending.get(partition)
                if pending is None or pending[0] is not txp:
                    pending = self._pending[partition] = (txp, {})
                offsets = pending[1]
                for msg in msgs:
                    offsets[TP(msg.topic, partition)] = msg.offset + 1
        if self._dropped:
            await self._rewind()

    def keep_verified(self, partitions: set[int]) -> None:
        """A new assignment: partitions we keep stay verified, new ones must be checked."""
        self._verified &= partitions
        self.metrics.verified_partitions = len(self._verified)

    async def verify_restored(self) -> None:
        """Verify every newly restored partition against the ledger (``pipeline.restore``);
        until it is verified, a partition is not processed. When the ledger itself cannot be
        folded, the worker stops with the accounts named rather than write from wrong state."""
        partitions = sorted(
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.usage_events and tp.partition not in self._verified
        )
        if not partitions:
            return
        try:
            self._verified.update(await self.verifier.verify(partitions))
        except RestoreMismatchError as error:
            log.error("%s", error)
            await self.app.crash(error)
            raise
        finally:
            self.metrics.verified_partitions = len(self._verified)

    def _next_offset(self, tp: TP) -> int | None:
        """The offset of ``tp``'s next unprocessed record: pending in the open transaction, else
        committed; None when neither is known (a new group before its first commit)."""
        pending = self._pending.get(tp.partition)
        if pending is not None:
            try:
                txp = self._transaction(tp.partition)[1]
            except KeyError:
                txp = None
            if pending[0] is txp and tp in pending[1]:
                return pending[1][tp]
        committed: int | None = self.app.consumer._committed_offset.get(tp)
        return committed

    def _unprocessed(self, partition: int, msgs: list[InMessage]) -> list[InMessage]:
        """``msgs`` minus records already processed (a re-fetch after a seek must never apply a
        record twice); almost always ``msgs`` itself."""
        first: dict[str, int] = {}
        for msg in msgs:
            first.setdefault(msg.topic, msg.offset)
        floors = {
            topic: floor
            for topic in first
            if (floor := self._next_offset(TP(topic, partition))) is not None
            and first[topic] < floor
        }
        if not floors:
            return msgs
        kept = [m for m in msgs if m.offset >= floors.get(m.topic, -1)]
        self.metrics.refetched_skipped += len(msgs) - len(kept)
        log.info(
            "skipped %d already processed records of partition %d", len(msgs) - len(kept), partition
        )
        return kept

    def _drop(self, msgs: list[InMessage], why: str) -> None:
        """Leave ``msgs`` unprocessed and remember where their partitions must be re-read."""
        dropped = self._dropped
        for msg in msgs:
            tp = TP(msg.topic, msg.partition)
            if dropped.get(tp, msg.offset) >= msg.offset:
                dropped[tp] = msg.offset
        self.metrics.dropped_fetched += len(msgs)
        log.warning(
            "dropped %d fetched records of partition %d: %s", len(msgs), msgs[0].partition, why
        )

    async def _rewind(self) -> None:
        """Seek partitions we still own back to their next unprocessed record after a drop.

        faust seeks every assigned partition to its committed offset when a rebalance ends, but
        a batch fetched before that seek and dropped after it has already moved the consumer's
        read offset past its records: without this the partition would skip them until a
        restart. Waits (keeps the list) while a rebalance is in progress.
        """
        app = self.app
        consumer = app.consumer
        if not consumer.flow_active or app.rebalancing:
            return
        assigned = consumer.assignment()
        dropped, self._dropped = self._dropped, {}
        for tp, first in dropped.items():
            if tp not in assigned:
                continue  # the new owner reads it from the committed offset
            target = self._next_offset(tp)
            try:
                await consumer.seek(tp, first if target is None else target)
            except IllegalStateError:
                log.info("no rewind of %s: it was revoked meanwhile", tp)

    async def commit(self) -> None:
        """Commit every partition's open transaction that holds processed batches."""
        parts = list(self._pending)
        if len(parts) == 1:
            await self._commit_partition(parts[0])
        elif parts:
            await asyncio.gather(*(self._commit_partition(p) for p in parts))

    async def _commit_partition(self, partition: int) -> None:
        try:
            lock, _ = self._transaction(partition)
        except KeyError:
            self._pending.pop(partition, None)
            return
        async with lock:
            await self._commit_locked(partition)

    async def _commit_locked(self, partition: int) -> None:
        """Commit ``partition``'s transaction with its pending offsets (lock held)."""
        try:
            txp = self._transaction(partition)[1]
        except KeyError:
            txp = None
        pending = self._pending.pop(partition, None)
        if txp is None:
            return
        try:
            if pending is not None and pending[0] is txp:
                await txp.send_offsets_to_transaction(pending[1], self.app.conf.id)
            await txp.commit_transaction()
            await txp.begin_transaction()
        except Exception as exc:
            log.exception("transaction commit failed for partition %d", partition)
            await self.app.crash(exc)
            raise
        self.metrics.transactions += 1
        if pending is not None and pending[0] is txp:
            committed = self.app.consumer._committed_offset
            for tp, offset in pending[1].items():
                committed[tp] = offset

    async def _send(self, txp: Any, partition: int, out: PartitionOutput) -> None:
        """Send a partition's output (records, account states, id chunks) in its transaction.

        Records go out as one aiokafka batch per topic (``create_batch``/``send_batch``, which
        add the partition to the transaction like ``send``), not one ``send`` per record: a
        ``send`` costs as much as pricing an event, and a batch emits about three records
        per event (ledger entry, account state, id chunk)."""
        batches = _TopicBatches(txp, partition)
        for rec in out.records:
            await batches.add(rec.topic, rec.key, rec.value, rec.headers)
        if out.states or out.deleted:
            changelog = self.table.changelog_topic.get_topic_name()
            batch = WriteBatch(raw_mode=True)
            for account_id, state in out.states.items():
                key = account_id.encode()
                await batches.add(changelog, key, state)
                batch.put(key, state)
            for account_id in out.deleted:
                key = account_id.encode()
                await batches.add(changelog, key, None)
                batch.delete(key)
            self.table.data._db_for_partition(partition).write(batch)
        if out.id_chunks:
            changelog = self.ids_table.changelog_topic.get_topic_name()
            for key, value in out.id_chunks:
                await batches.add(changelog, key, value)
            write_chunks(self.ids_table.data._db_for_partition(partition), out.id_chunks)
        await batches.flush()
        self.metrics.entries += out.entries

    async def publish(self, partition: int, out: PartitionOutput) -> bool:
        """Send ``out`` in ``partition``'s transaction and commit it now (a restore's repair);
        False when this worker has no transactional producer for the partition."""
        try:
            lock, txp = self._transaction(partition)
        except KeyError:
            return False
        async with lock:
            await self._send(txp, partition, out)
            await self._commit_locked(partition)
        return True

    async def sweep(self, processor: BatchProcessor, now: int) -> None:
        """Sweep every stored account of each active partition; commit what it emits."""
        if getattr(self.app, "in_recovery", False) or self.app.tables.recovery.in_recovery:
            return
        actives = sorted(
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.usage_events
        )
        for partition in actives:
            if partition not in self._verified:
                continue  # restored state not yet checked against the ledger
            try:
                lock, txp = self._transaction(partition)
            except KeyError:
                continue
            async with lock:
                out = PartitionOutput(partition)
                db = self.table.data._db_for_partition(partition)
                for key, value in db.items():
                    if key.startswith(FAUST_KEY_PREFIX):
                        continue
                    processor.sweep_account(partition, key.decode(), value, now, out)
                if not out.records and not out.states:
                    continue
                processor.clear_cache(partition, list(out.states))
                await self._send(txp, partition, out)
                await self._commit_locked(partition)


class _TopicBatches:
    """Open aiokafka record batches of one partition, one per topic, sent when full or flushed
    (in the order they were filled, so each topic-partition keeps its record order)."""

    def __init__(self, producer: Any, partition: int) -> None:
        self._producer = producer
        self._partition = partition
        self._open: dict[str, Any] = {}

    async def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        batch = self._open.get(topic)
        if batch is None:
            batch = self._open[topic] = self._producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=headers or []) is not None:
            return
        await self._send(topic)  # full: send it and start the next one
        batch = self._open[topic] = self._producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
            # Larger than a whole batch: on its own, after what was batched before it.
            del self._open[topic]
            await self._producer.send(
                topic, value=value, key=key, partition=self._partition, headers=headers
            )

    async def _send(self, topic: str) -> None:
        batch = self._open.pop(topic)
        if batch.record_count():
            await self._producer.send_batch(batch, topic, partition=self._partition)

    async def flush(self) -> None:
        for topic in list(self._open):
            await self._send(topic)


def _lag(app: faust.App) -> dict[tuple[str, int], int]:
    lag: dict[tuple[str, int], int] = {}
    try:
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic.endswith("-changelog"):
                continue
            high = consumer.highwater(tp)
            committed = consumer._committed_offset.get(tp)
            if high is not None:
                lag[(tp.topic, tp.partition)] = max(0, high - (committed or 0))
    except Exception:  # metrics must never break the endpoint
        log.debug("lag unavailable", exc_info=True)
    return lag


EngineFactory = Callable[[ProcessorConfig], EngineSource]
