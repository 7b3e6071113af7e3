"""The faust app: both source topics, two tables, the commit loop, a sweep, the metrics page.

Exactly-once is done by ``pipeline.sink`` rather than by faust's ``TransactionManager`` (see
``docs/processor.md`` for the faust findings). faust still owns the consumer group, the
per-partition transactional producers (transactional id ``{app_id}-{group}-{partition}``), the
RocksDB tables and their restore from the changelogs. :class:`FaustRuntime` and
:class:`FaustTable` give the sink and the restore check those, through ``pipeline.ports``:
every private faust attribute the processor touches is read here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import faust
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition as TP

from metering.avro import (
    CREDIT_ALERT,
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    USAGE_EVENT,
    AvroCodec,
    load_registry,
)
from metering.logs import CalmLogs
from metering.topics import TopicNames
from pipeline.config_reload import EngineSource, LiveEngine
from pipeline.core import BatchProcessor, Codecs, InMessage
from pipeline.id_store import IdStore
from pipeline.logs import logging_config
from pipeline.metrics import Metrics
from pipeline.routing import Router
from pipeline.runtime import fixes, stores
from pipeline.runtime.consumer import batch_consumer_class
from pipeline.settings import ProcessorConfig
from pipeline.sink import TransactionalSink

log = logging.getLogger("pipeline.runtime")

LIVENESS_CHECK_S = 5.0
"""How often the sink's liveness stop is asked whether a batch or a commit has hung
(``pipeline.liveness``)."""
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

    def group_topics(self) -> dict[str, tuple[int, dict[str, str]]]:
        """The topics faust declares lazily, as it would (name -> (partitions, configs)): both
        tables' changelogs and faust's leader topic.

        The worker creates them before it joins. faust's assignor leaves out every subscribed
        topic missing from the group leader's metadata, and a leader whose metadata predates
        a changelog's creation kept assigning without it for seconds (seen: a table's
        changelog in no assignment for two generations). Its partitions then left and came
        back without the source partitions (dropped, restored again, never checked), and the
        transactional ids, numbered by the assignor's topic groups, could change between two
        generations, so that one owner would not fence the other."""
        app = self.app
        topics: dict[str, tuple[int, dict[str, str]]] = {
            f"{app.conf.id}-__assignor-__leader": (1, {}),
        }
        for table in app.tables.values():
            topics[table.changelog_topic.get_topic_name()] = (
                self.config.partitions,
                {"cleanup.policy": "compact"},
            )
        return topics


def make_codecs(config: ProcessorConfig) -> Codecs:
    registry = load_registry(schema_dir=config.schema_dir)
    return Codecs(
        usage=AvroCodec(registry, USAGE_EVENT),
        command=AvroCodec(registry, CREDIT_COMMAND),
        ledger=AvroCodec(registry, LEDGER_ENTRY),
        alert=AvroCodec(registry, CREDIT_ALERT),
    )


def canonical_url(config: ProcessorConfig) -> str:
    """The worker's name in the group's assignment: its web address, or with static membership
    its instance id.

    Why: the broker gives a static member that rejoins the assignment of its previous
    generation, which names the address it had then. faust asserts that it names the current
    one, and when a worker came back on another port (a redeploy) that assertion killed the
    consumer's coordinator: the worker ran on and processed nothing."""
    if config.instance_id:
        return f"http://static-member.invalid/{quote(config.instance_id, safe='')}"
    return f"http://{config.web_host}:{config.web_port}"


def build_app(config: ProcessorConfig, source: EngineSource) -> ProcessorApp:
    """Create the faust app for ``config``; ``source`` builds (and rebuilds) the engine.

    Raises ``fixes.UnsupportedFaustVersion`` on any faust-streaming but the pinned one."""
    fixes.apply()
    stores.register()
    topics = TopicNames(config.prefix)
    metrics = Metrics()
    live = LiveEngine(source, metrics)
    ids_ref: list[FaustTable] = []
    id_store = IdStore(lambda partition: ids_ref[0].db(partition))
    processor = BatchProcessor(
        topics, live.current, make_codecs(config), metrics, id_store, Router(config.partitions)
    )
    app = faust.App(
        config.app_id,
        broker=f"kafka://{config.bootstrap}",
        store=f"{stores.SCHEME}://",  # RocksDB, rebuilt from the changelog on assignment
        processing_guarantee="exactly_once",
        datadir=str(config.data_dir),
        autodiscover=False,
        web_enabled=True,
        web_host=config.web_host,
        web_port=config.web_port,
        web_bind=config.web_host,
        canonical_url=canonical_url(config),
        broker_commit_interval=config.commit_interval_s,
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication or 1,
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
    sink_ref: list[TransactionalSink] = []

    async def handle(batch: list[InMessage], generation: int) -> None:
        await sink_ref[0].handle(batch, generation)

    # Must be set before faust creates its consumer (lazily, at worker start).
    app.transport.Consumer = batch_consumer_class(
        frozenset({topics.usage_events, topics.credit_commands}), handle
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
        store=f"{stores.IDS_SCHEME}:{IDS_TABLE_NAME}",  # "x://" alone is a false URL
    )
    ids_ref.append(FaustTable(ids_table))
    source_topic = app.topic(
        topics.usage_events,
        topics.credit_commands,
        key_serializer="raw",
        value_serializer="raw",
        partitions=config.partitions,
        internal=False,
    )
    accounts = FaustTable(table)
    runtime = FaustRuntime(app, topics.usage_events)
    sink = TransactionalSink(
        runtime, accounts, ids_ref[0], topics, metrics, processor, config.bootstrap
    )

    def load(partition: int, account_id: str) -> bytes | None:
        value: bytes | None = accounts.db(partition).get(account_id.encode())
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
        await sink.commit_before_revocation()

    app.on_partitions_revoked.connect(on_revoked)

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        sink.keep_verified(set(assigned))

    app.on_partitions_assigned.connect(on_assigned)

    async def on_restored(*args: Any, **kwargs: Any) -> None:
        # Sent by faust's recovery once the changelog is read, before the streams resume.
        await sink.verify_restored()

    app.on_rebalance_complete.connect(on_restored)

    async def check_liveness() -> None:
        await sink.liveness.check()

    app.timer(LIVENESS_CHECK_S, name="liveness")(check_liveness)

    if config.sweep_interval_s:

        async def sweep() -> None:
            await sink.sweep(processor, int(time.time() * 1000))

        app.timer(config.sweep_interval_s, name="sweep")(sweep)

    async def reload_config() -> None:
        live.maybe_reload()

    app.timer(config.reload_interval_s, name="config_reload")(reload_config)

    async def metrics_view(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type: text() adds it itself.
        text = metrics.render(_lag(app)).decode()
        return web.text(text, content_type="text/plain; version=0.0.4")

    app.page("/metrics")(metrics_view)

    return ProcessorApp(app, config, topics, metrics, live, processor)


_FAUST_KEY_PREFIX = b"__faust"
"""faust's own bookkeeping keys in a table's RocksDB (not accounts)."""


class FaustTable:
    """A faust table as ``pipeline.ports.StateTable``."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._changelog: str = table.changelog_topic.get_topic_name()

    @property
    def changelog(self) -> str:
        return self._changelog

    def db(self, partition: int) -> Any:
        return self._table.data._db_for_partition(partition)

    def accounts(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db(partition).items():
            if not key.startswith(_FAUST_KEY_PREFIX):
                yield key, value

    def persisted_offset(self, partition: int) -> int | None:
        offset: int | None = self._table.data.persisted_offset(TP(self._changelog, partition))
        return offset

    def set_persisted_offset(self, partition: int, offset: int) -> None:
        self._table.data.set_persisted_offset(TP(self._changelog, partition), offset)


class FaustRuntime:
    """The faust app as ``pipeline.ports.StreamRuntime`` (its consumer, producers, recovery)."""

    def __init__(self, app: faust.App, source_topic: str) -> None:
        self._app = app
        self._source_topic = source_topic

    @property
    def group_id(self) -> str:
        group: str = self._app.conf.id
        return group

    def transaction(self, partition: int) -> tuple[asyncio.Lock, Any]:
        app = self._app
        group = app.assignor.group_for_topic(self._source_topic)
        tid = f"{app.conf.id}-{group}-{partition}"
        producer = app.producer
        return producer._trn_locks[tid], producer._transaction_producers[tid]

    def committed_offset(self, tp: TP) -> int | None:
        committed: int | None = self._app.consumer._committed_offset.get(tp)
        return committed

    def mark_committed(self, offsets: Mapping[TP, int]) -> None:
        self._app.consumer._committed_offset.update(offsets)

    @property
    def generation(self) -> int:
        generation: int = self._app.consumer_generation_id
        return generation

    @property
    def flowing(self) -> bool:
        return bool(self._app.consumer.flow_active)

    @property
    def rebalancing(self) -> bool:
        return bool(self._app.rebalancing)

    @property
    def recovering(self) -> bool:
        app = self._app
        return bool(getattr(app, "in_recovery", False) or app.tables.recovery.in_recovery)

    def assignment(self) -> set[TP]:
        return set(self._app.consumer.assignment())

    def active_partitions(self) -> list[int]:
        return sorted(
            tp.partition
            for tp in self._app.assignor.assigned_actives()
            if tp.topic == self._source_topic
        )

    async def seek(self, tp: TP, offset: int) -> bool:
        try:
            await self._app.consumer.seek(tp, offset)
        except IllegalStateError:
            return False
        return True

    async def crash(self, error: BaseException) -> None:
        await self._app.crash(error)


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


def run_worker(built: ProcessorApp, loglevel: str, calm: CalmLogs | None = None) -> None:
    """Run ``built`` in a faust worker until it is stopped (blocks)."""
    worker = faust.Worker(
        built.app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config(loglevel, calm),
    )
    # faust's terminal spinner sets the root logger to DEBUG (so every library debug call
    # builds a LogRecord: ~10 % of the CPU under load) and spins on each record. No spinner.
    worker.spinner = None
    worker.execute_from_commandline()
