"""A faust consumer that hands whole fetched batches of the source topics to one handler.

faust delivers every record on its own: the fetcher wraps each in two tasks (``wait_first``),
the conductor decodes it into an ``Event`` and queues it, the stream pulls it back out, and
``take_events`` re-batches it. That machinery cost ~75 % of the worker's CPU at ~6,000
events/s. Here the fetcher loop converts the records of the *source* topics straight into
:class:`~pipeline.core.InMessage` lists and awaits ``batch_handler`` once per fetch; every
other topic (the table changelogs during recovery) still takes faust's per-record path, so
table recovery is unchanged. Everything else (group membership, rebalances, seeks, the
transactional producers, the tables) stays faust's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from pipeline.core import InMessage

BatchHandler = Callable[[list[InMessage], int], Awaitable[None]]
"""(messages in fetch order, consumer generation id at fetch time) -> processed."""


FETCH_MAX_WAIT_MS = 100
"""faust hard-codes aiokafka's ``fetch_max_wait_ms=1500``. aiokafka keeps one fetch in flight
per broker and leaves partitions that still hold buffered records out of it, so a fetch for
only the idle partitions (e.g. credit-commands) parks the broker connection for 1.5 s while
usage records pile up: at a steady 5,000 events/s that alone gave p50 1.4 s / p99 2.8 s.
At 20 ms an idle worker sent ~50 empty fetches a second (5 % of a core); 100 ms costs at most
0.1 s of latency and an idle worker about 1 %."""


class _ConsumerThread(AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        return consumer

    async def _fetch_records(self, consumer: Any, *args: Any, **kwargs: Any) -> Any:
        records = await super()._fetch_records(consumer, *args, **kwargs)
        # aiokafka moved each partition's position past these records just now; until the
        # drain loop has handed them on they are "fetched but undelivered" (see
        # BatchConsumer.position). Recorded before any await, so no reader sees the gap.
        undelivered = self.consumer.undelivered
        for tp, recs in records.items():
            if recs:
                undelivered[tp] = recs[0].offset
        return records


def batch_consumer_class(
    source_topics: frozenset[str],
    handler: BatchHandler,
) -> type[Any]:
    """A faust aiokafka ``Consumer`` subclass that batches ``source_topics`` to ``handler``."""

    class BatchConsumer(AIOKafkaConsumer):  # type: ignore[misc]
        undelivered: dict[Any, int]
        """partition -> first offset of records fetched but not yet handed on"""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.undelivered = {}
            super().__init__(*args, **kwargs)

        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def position(self, tp: Any) -> int | None:
            """The position of ``tp`` as far as its records have been *delivered*.

            aiokafka's position moves when a fetch returns, before the drain loop hands the
            records on. faust's changelog recovery reads it to decide that a partition "ends
            in an aborted transaction" (position at the high-water mark, no event in the
            queue) and then marks the partition restored: when its poll timed out inside
            that gap, recovery ended with the partition's state unread, and every account
            of the partition started again at seq 1 (docs/processor.md, item 10).
            """
            pos: int | None = await super().position(tp)
            first = self.undelivered.get(tp)
            if first is None or pos is None:
                return pos
            return min(pos, first)

        async def _drain_messages(self, fetcher: Any) -> None:
            consumer_stopped = self._stopped.is_set
            fetcher_stopped = fetcher._stopped.is_set
            undelivered = self.undelivered
            try:
                while not (consumer_stopped() or fetcher_stopped()):
                    records, active = await self._wait_next_records(1.0)
                    try:
                        await self._deliver(records, active)
                    finally:
                        for tp in records or ():
                            undelivered.pop(tp, None)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    self.log.info("Broker stopped consumer, shutting down...")
                    return
                raise
            except Exception as exc:
                self.log.exception("Drain messages raised: %r", exc)
                raise

        async def _deliver(self, records: Any, active: set[Any] | None) -> None:
            """Hand one fetch on: source topics as one batch, other topics record by record."""
            await self.sleep(0)
            if not records or self.should_stop:
                return
            if not self.flow_active:
                await self._seek_back_unless_reassigned()
                return
            app = self.app
            callback = self.callback
            read_offset = self._read_offset
            acks_enabled_for = app.topics.acks_enabled_for
            generation = app.consumer_generation_id
            batch: list[InMessage] = []
            for tp, recs in records.items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                fast = tp.topic in source_topics
                for rec in recs:
                    offset = rec.offset
                    last = read_offset.get(tp)
                    if last is not None and offset < last:
                        continue  # already seen (faust drops these too)
                    if fast:
                        batch.append(
                            InMessage(
                                rec.topic,
                                rec.partition,
                                offset,
                                rec.timestamp,
                                rec.key,
                                rec.value,
                                list(rec.headers) if rec.headers else None,
                            )
                        )
                    else:
                        if last and offset - last > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, last + 1, offset)
                        await self.wait_first(
                            callback(self._to_message(tp, rec)), self.suspend_flow.wait()
                        )
                    read_offset[tp] = offset
            if batch:
                await handler(batch, generation)

        async def perform_seek(self) -> None:
            """faust's seek to the committed offsets, then the source partitions that have
            none back to their beginning.

            aiokafka seeks only partitions whose committed offset is above 0. A partition kept
            across a rebalance, whose records this worker had read into a transaction that
            was then aborted (its producer replaced, a commit that failed) before any offset
            of it was committed, kept its read position past those records: nothing ever read
            them again, and the worker sat idle with the partition's input unprocessed
            (docs/processor.md item 16). A group's first read starts at the beginning too
            (``auto.offset.reset=earliest``), so this is where its next owner would start."""
            await super().perform_seek()
            committed = self._committed_offset
            never = [
                tp
                for tp in self.assignment()
                if tp.topic in source_topics and not committed.get(tp)
            ]
            if never:
                await self._thread.seek_to_beginning(
                    *(TopicPartition(tp.topic, tp.partition) for tp in never)
                )

        async def _seek_back_unless_reassigned(self) -> None:
            # faust seeks to the committed offsets here; when a rebalance has already changed
            # the assignment, aiokafka raises for a partition we lost and faust's fetcher
            # crashes the worker. The rebalance's own recovery seeks every partition anyway.
            try:
                await self.perform_seek()
            except IllegalStateError as exc:
                self.log.info("seek skipped, the assignment changed: %r", exc)

    return BatchConsumer
