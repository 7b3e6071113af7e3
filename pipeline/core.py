"""One batch of input records in, per-partition output records and state writes out.

No Kafka here: the faust agent feeds :class:`InMessage` values and ships what comes back
inside one transaction per partition. Keeping this pure makes the exactly-once reasoning
local: everything an input caused (ledger entries, alerts, DLQ records and the account's new
state) is returned together, so the caller can commit it atomically or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metering.avro import AvroCodec, CodecError
from metering.dlq import dead_letter
from metering.topics import TopicNames
from pipeline.fast_avro import make_ledger_entry_encoder, make_usage_event_decoder
from pipeline.fast_command import make_credit_command_decoder
from pipeline.id_store import ChunkRecord, IdStore
from pipeline.metrics import Metrics
from pipeline.ports import EnginePort, InputError
from pipeline.routing import REROUTED_FROM, Router


@dataclass(slots=True)
class InMessage:
    """A consumed record, with what the DLQ headers and determinism need."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    """The record's own headers: a dead-lettered input keeps them."""


@dataclass(slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None
    """Another partition than the source's (a forwarded input record); None: the source's."""
    timestamp_ms: int | None = None
    """A forwarded input record keeps its timestamp: the engine's ``recorded_at``."""


@dataclass(slots=True)
class PartitionOutput:
    """Everything one partition's slice of a batch produced, in input order."""

    partition: int
    records: list[OutRecord] = field(default_factory=list)
    states: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    """Accounts whose state is removed (a tombstone in the changelog)."""
    id_chunks: list[ChunkRecord] = field(default_factory=list)
    """Changelog records of the ``event_ids`` table (``pipeline.id_store``)."""
    entries: int = 0


@dataclass(frozen=True, slots=True)
class Codecs:
    usage: AvroCodec
    command: AvroCodec
    ledger: AvroCodec
    alert: AvroCodec


StateLoader = Callable[[int, str], bytes | None]
"""(partition, account_id) -> the stored state bytes, or None for a new account."""

STATE_CACHE_MAX = 100_000
"""Decoded account states kept between batches (least recently used go first)."""

DEAD_LETTER_ALERTS_REMEMBERED = 10_000
"""Ids of the latest alerts sent with DLQ records; a copy of the same bad input (a retry, a
DLQ replay) is dead-lettered again but not alerted again while its id is among these."""


class BatchProcessor:
    """Decode, group by account, apply in order, encode: the processor's whole logic."""

    def __init__(
        self,
        topics: TopicNames,
        engine_ref: Callable[[], EnginePort],
        codecs: Codecs,
        metrics: Metrics,
        ids: IdStore | None = None,
        router: Router | None = None,
    ) -> None:
        self.topics = topics
        self.ids = ids
        self.router = router
        """Forwards records that arrived off their account's partition (None: no check)."""
        """Where states remember event ids; None keeps them in each state (tests, benches)."""
        self._engine_ref = engine_ref
        self.codecs = codecs
        self.metrics = metrics
        self._decode_usage = make_usage_event_decoder(codecs.usage)
        self._decode_command = make_credit_command_decoder(codecs.command)
        self._encode_ledger = make_ledger_entry_encoder(codecs.ledger)
        self._cache: dict[tuple[int, str], Any] = {}
        """(partition, account) -> the decoded state whose bytes were last written for it.

        Decoding a stored state (and rebuilding its dedupe window) was ~20 % of the worker's CPU
        at a steady 5,000 events/s, where nearly every record of a small batch is the only one
        of its account. An entry is taken *out* while a batch applies to it (the engine mutates
        in place) and put back only with the state that batch wrote, so a record that fails
        half-way never leaves a state that differs from the stored bytes. The caller clears it
        whenever the stored state can change behind our back (rebalance, sweep, new engine)."""
        self._cache_engine: EnginePort | None = None
        self._dead_letter_alerts: dict[str, None] = {}
        """alert_id -> None, oldest first: alerts sent with DLQ records (bounded, see
        ``DEAD_LETTER_ALERTS_REMEMBERED``). Memory only: after a restart or a rebalance a copy
        may alert once more, with the same deterministic ``alert_id``."""

    @property
    def engine(self) -> EnginePort:
        """The engine in force now (it changes when the price book or plans are reloaded)."""
        return self._engine_ref()

    def clear_cache(self, partition: int | None = None, account_ids: Sequence[str] = ()) -> None:
        """Forget cached states: all, or those of ``account_ids`` in ``partition``."""
        if partition is None:
            self._cache.clear()
            self._dead_letter_alerts.clear()
            if self.ids is not None:
                self.ids.clear()
        else:
            for account_id in account_ids:
                self._cache.pop((partition, account_id), None)

    def process(self, batch: Sequence[InMessage], load: StateLoader) -> dict[int, PartitionOutput]:
        """Apply ``batch`` (in order) and return the outputs keyed by source partition."""
        engine = self._engine_ref()  # one price book for the whole batch
        cache = self._cache
        if engine is not self._cache_engine:
            cache.clear()  # states are the engine's objects: never mix two engines' states
            self._cache_engine = engine
        outputs: dict[int, PartitionOutput] = {}
        states: dict[tuple[int, str], Any] = {}
        usage_topic = self.topics.usage_events
        decode_usage = self._decode_usage
        decode_command = self._decode_command
        encode_ledger = self._encode_ledger
        encode_alert = self.codecs.alert.encode
        ledger_topic = self.topics.credit_ledger
        alerts_topic = self.topics.credit_alerts
        processed = 0
        ids = self.ids
        router = self.router
        for msg in batch:
            out = outputs.get(msg.partition)
            if out is None:
                out = outputs[msg.partition] = PartitionOutput(msg.partition)
            is_usage = msg.topic == usage_topic
            try:
                if msg.value is None:
                    raise CodecError("tombstone: a null value is not a record")
                record = decode_usage(msg.value) if is_usage else decode_command(msg.value)
                account_id = record.get("account_id")
                if not isinstance(account_id, str) or not account_id:
                    raise InputError("invalid", "record has no account_id")
                home = msg.partition if router is None else router.home(account_id)
                if home != msg.partition:
                    self._forward(out, msg, home)
                    continue
                slot = (msg.partition, account_id)
                state = states.get(slot)
                if state is None:
                    state = cache.pop(slot, None)
                if state is None:
                    raw = load(msg.partition, account_id)
                    state = engine.new_state(account_id) if raw is None else engine.load_state(raw)
                    if ids is not None:
                        engine.attach_ids(state, ids.view(msg.partition, account_id))
                if is_usage:
                    step = engine.apply_usage(state, record, msg.timestamp_ms)
                else:
                    step = engine.apply_command(state, record, msg.timestamp_ms)
            except (CodecError, InputError) as exc:
                self._dead_letter(out, msg, exc, is_usage)
                continue
            states[slot] = step.state
            key = account_id.encode()
            for entry in step.entries:
                out.records.append(OutRecord(ledger_topic, key, encode_ledger(entry)))
            for alert in step.alerts:
                out.records.append(OutRecord(alerts_topic, key, encode_alert(alert)))
            out.entries += len(step.entries)
            self.metrics.alerts += len(step.alerts)
            processed += 1
        for slot, state in states.items():
            outputs[slot[0]].states[slot[1]] = engine.dump_state(state)
            cache[slot] = state
        while len(cache) > STATE_CACHE_MAX:
            del cache[next(iter(cache))]
        if ids is not None:
            for partition, out in outputs.items():
                out.id_chunks = ids.flush(partition)
        self.metrics.processed += processed
        self.metrics.observe_batch(len(batch))
        return outputs

    def _forward(self, out: PartitionOutput, msg: InMessage, home: int) -> None:
        """Send ``msg`` on to its account's partition, where it will be applied (routing.py)."""
        headers = list(msg.headers or ())
        if any(name == REROUTED_FROM for name, _ in headers):
            raise InputError(
                "misrouted",
                f"forwarded to partition {msg.partition}, but its account's is {home}: the "
                "topic's partition count differs from the worker's --partitions",
            )
        headers.append((REROUTED_FROM, str(msg.partition).encode()))
        out.records.append(
            OutRecord(msg.topic, msg.key, msg.value, headers, home, msg.timestamp_ms)
        )
        self.metrics.rerouted += 1

    def sweep_account(
        self, partition: int, account_id: str, raw: bytes, now: int, out: PartitionOutput
    ) -> None:
        """Run the periodic sweep for one stored account, appending to ``out``."""
        engine = self._engine_ref()
        step = engine.sweep(engine.load_state(raw), now)
        if not step.entries and not step.alerts:
            return
        key = account_id.encode()
        for entry in step.entries:
            out.records.append(
                OutRecord(self.topics.credit_ledger, key, self._encode_ledger(entry))
            )
        for alert in step.alerts:
            out.records.append(
                OutRecord(self.topics.credit_alerts, key, self.codecs.alert.encode(alert))
            )
        out.entries += len(step.entries)
        out.states[account_id] = engine.dump_state(step.state)
        self.metrics.swept_entries += len(step.entries)

    def _dead_letter(
        self, out: PartitionOutput, msg: InMessage, exc: Exception, is_usage: bool
    ) -> None:
        error_class = exc.error_class if isinstance(exc, InputError) else type(exc).__name__
        dlq_topic = self.topics.usage_events_dlq if is_usage else self.topics.credit_commands_dlq
        letter = dead_letter(
            dlq_topic,
            key=msg.key,
            value=msg.value,
            error_class=error_class,
            message=str(exc),
            source_topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            original_headers=msg.headers,
        )
        out.records.append(OutRecord(letter.topic, letter.key, letter.value, letter.headers))
        self.metrics.dead_lettered[msg.topic] = self.metrics.dead_lettered.get(msg.topic, 0) + 1
        if isinstance(exc, InputError) and exc.alerts:
            self._dead_letter_alerts_out(out, exc.alerts)

    def _dead_letter_alerts_out(
        self, out: PartitionOutput, alerts: Sequence[Mapping[str, Any]]
    ) -> None:
        """The alerts of a dead-lettered input, next to its DLQ record (same transaction)."""
        sent = self._dead_letter_alerts
        for alert in alerts:
            alert_id = alert["alert_id"]
            if alert_id in sent:
                self.metrics.alerts_suppressed += 1
                continue
            sent[alert_id] = None
            if len(sent) > DEAD_LETTER_ALERTS_REMEMBERED:
                del sent[next(iter(sent))]
            key = str(alert["account_id"]).encode()
            out.records.append(
                OutRecord(self.topics.credit_alerts, key, self.codecs.alert.encode(alert))
            )
            self.metrics.alerts += 1
