"""The exactly-once protocol: batches processed inside per-partition transactions, and committed.

Per batch and source partition, under the runtime's lock for that partition's transaction, every
ledger entry, alert, DLQ record and the changelog record of each touched account goes out
through that partition's transactional producer, and the batch's next offsets are noted. The
commit loop adds those offsets to the transaction and commits it under the same lock, so a
transaction holds whole batches and exactly their offsets. Replays after a crash start at
committed offsets over state restored from the committed changelog, verified against the
ledger first (``pipeline.restore``).

Runtime-agnostic: it speaks to the stream runtime only through ``pipeline.ports``
(``StreamRuntime``, ``StateTable``); ``pipeline/runtime`` implements those on faust, and
``tests/unit/pipeline/test_sink.py`` on fakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka.structs import TopicPartition as TP
from rocksdict import WriteBatch

from metering.topics import TopicNames
from pipeline.core import BatchProcessor, InMessage, PartitionOutput
from pipeline.id_store import write_chunks
from pipeline.liveness import Liveness
from pipeline.metrics import Metrics
from pipeline.ports import StateTable, StreamRuntime
from pipeline.restore import RestoreMismatchError, RestoreVerifier

log = logging.getLogger("pipeline.sink")


class TransactionalSink:
    """Processes fetched batches inside the per-partition transactions and commits them.

    Per source partition and batch, under the runtime's lock for that partition's transaction: load
    state, run the pure :class:`BatchProcessor`, send every output (ledger, alerts, DLQ, the
    changelog record of each touched account) through the partition's transactional producer,
    write RocksDB, and remember the next offset to commit. :meth:`commit` (a timer every
    ``commit_interval``, and on revocation) then, again under each lock, adds those offsets to
    the transaction and commits it, all partitions concurrently. A transaction therefore holds
    whole batches and exactly the offsets of the batches it holds.
    """

    def __init__(
        self,
        runtime: StreamRuntime,
        table: StateTable,
        ids_table: StateTable,
        topics: TopicNames,
        metrics: Metrics,
        processor: BatchProcessor,
        bootstrap: str,
    ) -> None:
        self.runtime = runtime
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
        self._assigned: set[TP] | None = None
        """The current assignment, every topic; None until the first (then every partition
        the runtime calls active is verified as it is)."""
        self._handling = asyncio.Lock()
        """Held while a fetched batch is processed: a revocation waits for it (see
        :meth:`commit_before_revocation`)."""
        self._committing = asyncio.Lock()
        """Held by :meth:`commit`: a revocation's commit waits for the commit loop's."""
        self.liveness = Liveness(runtime.crash)
        """Stops the worker when a batch or a commit hangs (the runtime's timer asks it)."""
        self.verifier = RestoreVerifier(
            bootstrap, topics, table, ids_table, processor, metrics, self.publish
        )

    def _transaction(self, partition: int) -> tuple[Any, Any]:
        return self.runtime.transaction(partition)

    async def handle(self, batch: list[InMessage], generation: int) -> None:
        """Process one fetched batch (any partitions, fetch order) of the source topics."""
        async with self._handling:
            with self.liveness.timed("processing a fetched batch"):
                await self._handle(batch, generation)

    async def _handle(self, batch: list[InMessage], generation: int) -> None:
        by_partition: dict[int, list[InMessage]] = {}
        for msg in batch:
            part = by_partition.get(msg.partition)
            if part is None:
                by_partition[msg.partition] = [msg]
            else:
                part.append(msg)
        runtime = self.runtime
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
                if runtime.generation != generation or not runtime.flowing:
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

    def keep_verified(self, assigned: set[TP]) -> None:
        """A new assignment (every topic-partition of it): a partition stays verified only
        while its source partition and both tables' changelog partitions stay ours. One that
        was newly assigned, the changelogs included, was restored by faust again: it is
        checked again before it is processed."""
        previous, self._assigned = self._assigned or set(), set(assigned)
        self._verified = {
            p
            for p in self._verified
            if all(tp in assigned and tp in previous for tp in self._owned(p))
        }
        self.metrics.verified_partitions = len(self._verified)

    def _owned(self, partition: int) -> tuple[TP, TP, TP]:
        """What this worker must own to process ``partition``: its source partition and the
        partitions of both tables' changelogs."""
        return (
            TP(self.topics.usage_events, partition),
            TP(self.table.changelog, partition),
            TP(self.ids_table.changelog, partition),
        )

    async def verify_restored(self) -> None:
        """Verify every newly restored partition against the ledger (``pipeline.restore``);
        until it is verified, a partition is not processed. When the ledger itself cannot be
        folded, the worker stops with the accounts named rather than write from wrong state."""
        partitions = [p for p in self.runtime.active_partitions() if p not in self._verified]
        assigned = self._assigned
        if assigned is not None:
            partial = [p for p in partitions if not all(tp in assigned for tp in self._owned(p))]
            if partial:
                # faust did not assign a table's changelog with its source partition (a topic
                # missing from the group leader's metadata): faust does not keep that store.
                log.warning(
                    "partitions %s are not processed: their changelog partitions are not "
                    "assigned with them (waiting for the next rebalance)",
                    partial,
                )
                partitions = [p for p in partitions if p not in partial]
        if not partitions:
            return
        try:
            self._verified.update(await self.verifier.verify(partitions))
        except RestoreMismatchError as error:
            log.error("%s", error)
            await self.runtime.crash(error)
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
        return self.runtime.committed_offset(tp)

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
        runtime = self.runtime
        if not runtime.flowing or runtime.rebalancing:
            return
        assigned = runtime.assignment()
        dropped, self._dropped = self._dropped, {}
        for tp, first in dropped.items():
            if tp not in assigned:
                continue  # the new owner reads it from the committed offset
            target = self._next_offset(tp)
            if not await runtime.seek(tp, first if target is None else target):
                log.info("no rewind of %s: it was revoked meanwhile", tp)

    async def commit_before_revocation(self) -> None:
        """Commit everything processed, once the batch being processed (if any) is done.

        A rebalance stops the flow and then asks us to commit; a batch already past the flow
        check goes on and notes its offsets afterwards. Committing only what was pending when
        the revocation came left that batch's transaction open into the rebalance, to be
        committed by the commit loop while faust stopped or replaced its producer: the commit
        then failed (fenced) or waited forever (docs/processor.md item 13). Batches that start
        after this are dropped (flow stopped, or a new generation).
        """
        with self.liveness.timed("the revocation's commit"):
            async with self._handling:
                await self.commit()

    async def commit(self) -> None:
        """Commit every partition's open transaction that holds processed batches.

        One at a time: a commit takes the offsets it commits out of the pending list when it
        starts, so a revocation's commit that ran beside the commit loop's would find nothing
        to do and let faust stop a producer whose commit was still in flight (it then waited
        forever, docs/processor.md item 13)."""
        with self.liveness.timed("a commit"):
            async with self._committing:
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
                await txp.send_offsets_to_transaction(pending[1], self.runtime.group_id)
            await txp.commit_transaction()
            await txp.begin_transaction()
        except Exception as exc:
            log.exception("transaction commit failed for partition %d", partition)
            await self.runtime.crash(exc)
            raise
        self.metrics.transactions += 1
        if pending is not None and pending[0] is txp:
            self.runtime.mark_committed(pending[1])

    async def _send(self, txp: Any, partition: int, out: PartitionOutput) -> None:
        """Send a partition's output (records, account states, id chunks) in its transaction.

        Records go out as one aiokafka batch per topic (``create_batch``/``send_batch``, which
        add the partition to the transaction like ``send``), not one ``send`` per record: a
        ``send`` costs as much as pricing an event, and a batch emits about three records
        per event (ledger entry, account state, id chunk)."""
        batches = _TopicBatches(txp, partition)
        for rec in out.records:
            if rec.partition is None:
                await batches.add(rec.topic, rec.key, rec.value, rec.headers)
            else:  # a forwarded input record (rare): on its own, in the same transaction
                await txp.send(
                    rec.topic, value=rec.value, key=rec.key, partition=rec.partition,
                    timestamp_ms=rec.timestamp_ms, headers=rec.headers,
                )  # fmt: skip
        if out.states or out.deleted:
            changelog = self.table.changelog
            batch = WriteBatch(raw_mode=True)
            for account_id, state in out.states.items():
                key = account_id.encode()
                await batches.add(changelog, key, state)
                batch.put(key, state)
            for account_id in out.deleted:
                key = account_id.encode()
                await batches.add(changelog, key, None)
                batch.delete(key)
            self.table.db(partition).write(batch)
        if out.id_chunks:
            changelog = self.ids_table.changelog
            for key, value in out.id_chunks:
                await batches.add(changelog, key, value)
            write_chunks(self.ids_table.db(partition), out.id_chunks)
        await batches.flush()
        self.metrics.entries += out.entries

    async def publish(self, partition: int, out: PartitionOutput) -> bool:
        """Send ``out`` in ``partition``'s transaction and commit it now (a restore's repair);
        False when this worker has no transactional producer for the partition."""
        try:
            lock, txp = self._transaction(partition)
        except KeyError:
            return False
        with self.liveness.timed("publishing a restore's repair"):
            async with lock:
                await self._send(txp, partition, out)
                await self._commit_locked(partition)
        return True

    async def sweep(self, processor: BatchProcessor, now: int) -> None:
        """Sweep every stored account of each active partition; commit what it emits."""
        if self.runtime.recovering:
            return
        for partition in self.runtime.active_partitions():
            if partition not in self._verified:
                continue  # restored state not yet checked against the ledger
            try:
                lock, txp = self._transaction(partition)
            except KeyError:
                continue
            async with lock:
                out = PartitionOutput(partition)
                for key, value in self.table.accounts(partition):
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
