"""``metering run projection``: consume ``credit-ledger`` and keep the Redis projection current.

Loop: consume a batch -> decode (poison records go to ``credit-ledger.dlq``) -> apply
(one pipelined round of EVALSHA) -> flush the DLQ -> commit offsets. Offsets are committed
only after Redis acknowledged, so a crash re-delivers and the idempotent script skips what
was applied. ``enable.auto.commit`` is off and the consumer reads committed data only.

Self-heal (``projections.self_heal``): Redis losing data is repaired from the ledger, without
an operator. Each consumer keeps a sentinel key per partition it owns and checks them every
second, on assignment and on a seq gap; a missing sentinel (FLUSHALL, a restart without
persistence) replays the partition from its first offset up to the committed position. A
seq gap is first offered to the ledger: the gapped accounts are replayed from their
partition (cleared first when their keys are gone), then the batch is applied again. Each
repair is logged at WARNING and counted (``projection_self_heals_total``). A repair blocks
this consumer's loop for as long as the replay takes.

Gap policy: an entry whose seq still skips ahead of the stored seq is NOT applied. Its
partition's offset is not committed past it; the partition is paused and re-read from that
offset with exponential back-off (1 s .. 60 s), each time logged at ERROR and counted in
``projection_gaps_total``. The projection therefore never advances silently past a hole;
the missing entries arriving (or ``metering projection rebuild --live``) clears it.

Static membership (``--instance-id``, Kafka's ``group.instance.id``): a consumer restarted
after a crash (kill -9) with the same id takes its partitions back at once, instead of the
group waiting out the dead member's session timeout (``session.timeout.ms``, 45 s) with
those partitions unread and Redis stale. Give every consumer of the group its own stable
id (e.g. the pod or host name). A static member does not leave the group on shutdown
either: a consumer stopped for good keeps its partitions until the session timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
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

from metering.dlq import dead_letter
from metering.logs import kafka_client_logging
from metering.metrics import Metric, counter, exposition, gauge
from metering.offset_commit import commit_offsets
from metering.topics import TopicNames
from projections.apply import ApplyResult, Gap, Projector
from projections.redis_connect import SyncRedis
from projections.self_heal import Repair, SelfHeal, gap_reason, gaps_to_repair

log = logging.getLogger("metering.projection")

Decoder = Callable[[bytes], dict[str, Any]]

GAP_BACKOFF_MIN_S = 1.0
GAP_BACKOFF_MAX_S = 60.0
REDIS_BACKOFF_MAX_S = 5.0
HEAL_CHECK_S = 1.0
"""How often the sentinels of the owned partitions are checked (one pipelined GET round)."""
HEAL_RETRY_S = 5.0


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
    self_heals: int = 0
    """Repairs from the ledger: whole partitions (Redis lost data) or gapped accounts."""
    self_heal_accounts: int = 0
    self_heal_entries: int = 0
    self_heal_errors: int = 0
    paused_partitions: int = 0

    def render(self) -> bytes:
        """Prometheus text (``prometheus_client``): ``metering_projection_<counter>_total``."""
        return exposition(self.families)

    def families(self) -> list[Metric]:
        out: list[Metric] = []
        for name, value in asdict(self).items():
            if name == "paused_partitions":
                out.append(gauge(f"metering_projection_{name}", "Partitions held back.", value))
            else:
                out.append(
                    counter(f"metering_projection_{name}_total", name.replace("_", " "), value)
                )
        return out


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
        client: SyncRedis,
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
        self.heal = SelfHeal(
            bootstrap=bootstrap,
            topic=topics.credit_ledger,
            client=client,
            projector=self.projector,
            decode=decode,
        )
        self._owned: set[int] = set()
        self._heal_at = 0.0
        """Next sentinel check (monotonic); 0 = at the next poll."""
        self._tried: dict[int, set[tuple[str, int, int]]] = {}
        """partition -> gaps (account, stored, next seq) the ledger could not fill."""
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
            **kafka_client_logging("projection"),
            # A self-heal replay blocks the poll loop for up to SelfHeal.timeout_s (600 s): the
            # group must not drop the member meanwhile (librdkafka's default is 300 s).
            "max.poll.interval.ms": 900_000,
        }
        if instance_id:
            config["group.instance.id"] = instance_id  # static membership (module docstring)
        config.update(extra_config or {})
        self.consumer = Consumer(config)
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                **kafka_client_logging("projection"),
            }
        )
        self.consumer.subscribe(
            [topics.credit_ledger], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._owned.update(tp.partition for tp in partitions)
        self._heal_at = 0.0  # check their sentinels before their first batch is applied

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._owned.discard(tp.partition)
            self._paused.pop(tp.partition, None)
            self._backoff.pop(tp.partition, None)
            self._tried.pop(tp.partition, None)
        self.metrics.paused_partitions = len(self._paused)

    # -- one batch --------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Consume, apply and commit one batch; return the number of records handled."""
        self._resume_due()
        messages = self.consumer.consume(self.batch_size, self.poll_timeout_s)
        if time.monotonic() >= self._heal_at:  # after consume: it runs the assign callback
            self._heal_at = time.monotonic() + HEAL_CHECK_S
            self._heal_lost("sentinel missing")
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
        letter = dead_letter(
            self.topics.credit_ledger_dlq,
            key=msg.key(),
            value=msg.value(),
            error_class=type(exc).__name__,
            message=str(exc),
            source_topic=str(msg.topic()),
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            original_headers=list(msg.headers() or ()),
        )
        self.producer.produce(
            letter.topic, key=letter.key, value=letter.value, headers=letter.headers
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

    def _apply_retrying(self, batch: _Batch) -> ApplyResult:
        delay = 0.05
        while True:
            try:
                return self.projector.apply_batch(batch.entries)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Nothing is committed; the same batch is re-sent (the script is idempotent).
                self.metrics.redis_errors += 1
                self._heal_at = 0.0  # a Redis back from a restart may have lost its data
                log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, REDIS_BACKOFF_MAX_S)

    def _apply(self, batch: _Batch) -> None:
        result = self._apply_retrying(batch)
        if result.gaps:
            result = self._heal_gaps(batch, result)
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
            self._tried.pop(partition, None)
        if self.producer.flush(30) != 0:
            raise RuntimeError("dead-letter records not acknowledged; not committing")
        if ends:
            topic = self.topics.credit_ledger
            offsets = [TopicPartition(topic, p, o) for p, o in sorted(ends.items())]
            commit_offsets(self.consumer, offsets)
            self.metrics.commits += 1

    # -- self-heal (projections.self_heal) ---------------------------------------------------

    def _committed(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offsets: how far Redis had the partitions (0 = nothing)."""
        topic = self.topics.credit_ledger
        found = self.consumer.committed([TopicPartition(topic, p) for p in partitions], 10)
        return {tp.partition: max(tp.offset, 0) for tp in found}

    def _heal_lost(self, reason: str) -> bool:
        """Rebuild the owned partitions whose sentinel is gone; True when any was replayed."""
        if not self._owned:
            return False
        try:
            missing = self.heal.missing(self._owned)
            if not missing:
                return False
            ends = self._committed(missing)
            if not any(ends.values()):  # nothing committed yet: nothing Redis could have lost
                self.heal.mark_ready(missing)
                log.info("projection sentinels set for partitions %s", missing)
                return False
            repair = self.heal.rebuild_partitions(ends, reason)
        except Exception as exc:  # the next check retries; a crash would only loop on it
            self._heal_failed(exc)
            return False
        self._healed(repair)
        for partition in repair.partitions:  # the replay may have filled a held gap
            if partition in self._paused:
                self._paused[partition].resume_at = 0.0
        return True

    def _heal_gaps(self, batch: _Batch, result: ApplyResult) -> ApplyResult:
        """Offer the batch's gaps to the ledger, then apply the batch again (idempotent)."""
        if self._heal_lost("seq gap, sentinel missing"):
            result = self._reapply(batch, result)
        repairs: list[tuple[Repair, set[str]]] = []
        for partition, gaps in gaps_to_repair(result.gaps, batch.positions, self._tried).items():
            stored = {g.account: g.stored_seq for g in gaps}
            try:
                end = self._committed([partition])[partition]
                repair = self.heal.rebuild_accounts(partition, end, stored, gap_reason(gaps))
            except Exception as exc:  # tried again at the partition's next retry
                self._heal_failed(exc)
                continue
            self._tried.setdefault(partition, set()).update(
                (g.account, g.stored_seq, g.got_seq) for g in gaps
            )
            repairs.append((repair, set(stored)))
        if not repairs:
            return result
        result = self._reapply(batch, result)
        for repair, accounts in repairs:
            repair.gaps += [_gap_text(g) for g in result.gaps if g.account in accounts]
            self._healed(repair)
        return result

    def _reapply(self, batch: _Batch, first: ApplyResult) -> ApplyResult:
        again = self._apply_retrying(batch)
        return ApplyResult(first.applied + again.applied, first.skipped, again.gaps)

    def _healed(self, repair: Repair) -> None:
        self.metrics.self_heals += 1
        self.metrics.self_heal_accounts += len(repair.accounts)
        self.metrics.self_heal_entries += repair.applied
        log.warning("%s", repair.describe())

    def _heal_failed(self, exc: Exception) -> None:
        self.metrics.self_heal_errors += 1
        self._heal_at = time.monotonic() + HEAL_RETRY_S
        log.warning("self-heal failed (retried in %.0fs): %r", HEAL_RETRY_S, exc)

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


def _gap_text(gap: Gap) -> str:
    return f"{gap.account}: stored {gap.stored_seq}, got {gap.got_seq}"
