"""The exactly-once protocol (``pipeline.sink.TransactionalSink``) against a fake runtime.

The way quixstreams tests its checkpoint: a factory fixture builds the sink over fakes of the
runtime's transactional producers, consumer position and tables (``pipeline.ports``), and each
test drives one rule of the protocol. The real runtime (faust) is covered by the integration
tests (kill -9, restart storms, rebalances).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition as TP
from rocksdict import Options, Rdict
from stub_engine import StubEngine
from test_pipeline_core import TOPICS, _grant, _processor, _usage

from pipeline.core import InMessage
from pipeline.sink import TransactionalSink

Record = tuple[str, int, bytes | None, bytes | None]
"""(topic, partition, key, value) as a fake producer saw it."""


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, timestamp: Any, key: Any, value: Any, headers: Any) -> object | None:
        if len(self.records) >= self.capacity or len(value or b"") > 10_000:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


@dataclass
class FakeProducer:
    """A transactional producer: records stay in the open transaction until it commits."""

    batch_capacity: int = 1000
    open: list[Record] = field(default_factory=list)
    open_offsets: dict[TP, int] = field(default_factory=dict)
    committed: list[Record] = field(default_factory=list)
    committed_offsets: dict[TP, int] = field(default_factory=dict)
    fail_commit: bool = False
    fenced: bool = False
    commit_gate: asyncio.Event | None = None
    """When set, a commit waits for it (a broker that does not answer)."""

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> None:
        self.open.extend((topic, partition, k, v) for k, v in batch.records)

    async def send(
        self, topic: str, *, value: Any, key: Any, partition: int, headers: Any = None
    ) -> None:
        self.open.append((topic, partition, key, value))

    async def send_offsets_to_transaction(self, offsets: Mapping[TP, int], group: str) -> None:
        assert group == "group"
        self.open_offsets.update(offsets)

    async def commit_transaction(self) -> None:
        if self.commit_gate is not None:
            await self.commit_gate.wait()
        if self.fail_commit or self.fenced:
            raise RuntimeError("producer fenced")
        self.committed.extend(self.open)
        self.committed_offsets.update(self.open_offsets)
        self.open, self.open_offsets = [], {}

    async def begin_transaction(self) -> None:
        pass

    def abort(self) -> None:
        """What the broker does to a fenced producer's open transaction."""
        self.fenced = True
        self.open, self.open_offsets = [], {}


@dataclass
class FakeRuntime:
    producers: dict[int, FakeProducer]
    group_id: str = "group"
    generation: int = 1
    flowing: bool = True
    rebalancing: bool = False
    recovering: bool = False
    committed: dict[TP, int] = field(default_factory=dict)
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    crashed: list[BaseException] = field(default_factory=list)
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def transaction(self, partition: int) -> tuple[asyncio.Lock, Any]:
        producer = self.producers[partition]  # KeyError: not ours
        return self.locks.setdefault(partition, asyncio.Lock()), producer

    def committed_offset(self, tp: TP) -> int | None:
        return self.committed.get(tp)

    def mark_committed(self, offsets: Mapping[TP, int]) -> None:
        self.committed.update(offsets)

    def assignment(self) -> set[TP]:
        topics = (TOPICS.usage_events, TOPICS.credit_commands)
        return {TP(t, p) for t in topics for p in self.producers}

    def active_partitions(self) -> list[int]:
        return sorted(self.producers)

    async def seek(self, tp: TP, offset: int) -> bool:
        self.seeks.append((tp, offset))
        return True

    async def crash(self, error: BaseException) -> None:
        self.crashed.append(error)


class FakeTable:
    """A real local RocksDB per partition (the store is not what these tests fake)."""

    def __init__(self, root: Path, changelog: str) -> None:
        self.root = root
        self.changelog = changelog
        self._dbs: dict[int, Rdict] = {}
        self.offsets: dict[int, int] = {}

    def db(self, partition: int) -> Rdict:
        if partition not in self._dbs:
            self._dbs[partition] = Rdict(
                str(self.root / f"{self.changelog}-{partition}"), Options(raw_mode=True)
            )
        return self._dbs[partition]

    def accounts(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        yield from self.db(partition).items()

    def persisted_offset(self, partition: int) -> int | None:
        return self.offsets.get(partition)

    def set_persisted_offset(self, partition: int, offset: int) -> None:
        self.offsets[partition] = offset

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


class PassingVerifier:
    async def verify(self, partitions: list[int]) -> list[int]:
        return partitions


@dataclass
class Harness:
    sink: TransactionalSink
    runtime: FakeRuntime
    table: FakeTable

    def producer(self, partition: int = 0) -> FakeProducer:
        return self.runtime.producers[partition]

    def ledger(self, partition: int = 0, *, committed: bool = True) -> list[dict[str, Any]]:
        from test_pipeline_core import LEDGER

        records = self.producer(partition).committed if committed else self.producer().open
        return [LEDGER.decode(v) for t, _, _, v in records if t == TOPICS.credit_ledger and v]

    async def handle(self, batch: list[InMessage]) -> None:
        await self.sink.handle(batch, self.runtime.generation)


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Factory: a verified sink over fakes with ``partitions`` source partitions."""
    tables: list[FakeTable] = []

    def make(partitions: int = 1, verified: bool = True, **producer: Any) -> Harness:
        runtime = FakeRuntime({p: FakeProducer(**producer) for p in range(partitions)})
        table = FakeTable(tmp_path, "accounts-changelog")
        ids = FakeTable(tmp_path, "ids-changelog")
        tables.extend((table, ids))
        processor, metrics = _processor()
        sink = TransactionalSink(runtime, table, ids, TOPICS, metrics, processor, "unused:9092")
        sink.verifier = PassingVerifier()  # type: ignore[assignment]
        sink.load = lambda p, a: table.db(p).get(a.encode())
        harness = Harness(sink, runtime, table)
        if verified:
            asyncio.run(sink.verify_restored())
        return harness

    yield make
    for table in tables:
        table.close()


def test_a_batch_and_its_offsets_commit_together_and_only_on_commit(
    make_sink: Callable[..., Harness],
) -> None:
    h = make_sink()

    async def run() -> None:
        await h.handle([_grant(0, "g1", "a"), _usage(0, "e1", "a")])
        assert h.producer().committed == [] and h.runtime.committed == {}
        assert [e["seq"] for e in h.ledger(committed=False)] == [1, 2]
        await h.sink.commit()

    asyncio.run(run())
    assert [e["seq"] for e in h.ledger()] == [1, 2]
    assert h.producer().committed_offsets == {
        TP(TOPICS.credit_commands, 0): 1,
        TP(TOPICS.usage_events, 0): 1,
    }
    assert h.runtime.committed == h.producer().committed_offsets
    states = [r for r in h.producer().committed if r[0] == "accounts-changelog"]
    assert [key for _, _, key, _ in states] == [b"a"], "one state record per account and batch"
    assert h.table.db(0).get(b"a") == states[0][3], "local store written with the changelog"


def test_a_batch_fetched_before_a_rebalance_is_dropped_and_rewound(
    make_sink: Callable[..., Harness],
) -> None:
    h = make_sink()

    async def run() -> None:
        fetched_in = h.runtime.generation
        h.runtime.generation += 1  # a rebalance between the fetch and its processing
        await h.sink.handle([_usage(5, "e1", "a")], fetched_in)

    asyncio.run(run())
    assert h.producer().open == [] and h.ledger() == []
    assert h.runtime.seeks == [(TP(TOPICS.usage_events, 0), 5)], "read again from the drop"


def test_a_revocation_commits_the_batch_that_was_being_processed_when_it_came(
    make_sink: Callable[..., Harness],
) -> None:
    """The rebalance stops the flow and asks for a commit while a batch is mid-send. Its
    offsets must be in that commit: left in an open transaction, the partition's next owner
    fences it and the late commit stops this worker (seen in the churn test under load)."""
    h = make_sink()
    producer = h.producer()
    release = asyncio.Event()
    send_batch = producer.send_batch

    async def slow_send_batch(batch: FakeBatch, topic: str, *, partition: int) -> None:
        await release.wait()
        await send_batch(batch, topic, partition=partition)

    async def run() -> None:
        producer.send_batch = slow_send_batch  # type: ignore[method-assign]
        batch = asyncio.create_task(h.handle([_usage(0, "e1", "a")]))
        await asyncio.sleep(0.01)  # past its flow check, sending
        h.runtime.flowing = False  # the rebalance stops the flow...
        revocation = asyncio.create_task(h.sink.commit_before_revocation())  # ...and commits
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(batch, revocation)

    asyncio.run(run())
    assert h.runtime.committed == {TP(TOPICS.usage_events, 0): 1}
    assert [e["cause_id"] for e in h.ledger()] == ["e1"]


def test_a_revocation_waits_for_the_commit_loops_commit_in_flight(
    make_sink: Callable[..., Harness],
) -> None:
    """The commit loop took the pending offsets and is committing when the revocation comes:
    the revocation must not return (and let faust stop the producer) before that commit is
    done."""
    release = asyncio.Event()
    h = make_sink(commit_gate=release)

    async def run() -> None:
        await h.handle([_usage(0, "e1", "a")])
        loop_commit = asyncio.create_task(h.sink.commit())
        await asyncio.sleep(0.01)  # the loop's commit took the offsets and waits on the broker
        revocation = asyncio.create_task(h.sink.commit_before_revocation())
        await asyncio.sleep(0.01)
        assert not revocation.done(), "the revocation returned with a commit in flight"
        release.set()
        await asyncio.gather(loop_commit, revocation)

    asyncio.run(run())
    assert h.runtime.committed == {TP(TOPICS.usage_events, 0): 1}


def _owned(partition: int, *changelogs: str) -> set[TP]:
    return {TP(TOPICS.usage_events, partition)} | {TP(c, partition) for c in changelogs}


def test_a_partition_whose_changelog_comes_back_is_verified_again(
    make_sink: Callable[..., Harness],
) -> None:
    """faust's assignor can leave a table's changelog out of one generation (a topic missing
    from the leader's metadata) and give it back in the next: that store was restored again
    behind the source partition's back, so the partition is checked again before it runs."""
    h = make_sink(verified=False)
    both = ("accounts-changelog", "ids-changelog")

    async def run() -> None:
        h.sink.keep_verified(_owned(0, *both))
        await h.sink.verify_restored()
        assert h.sink.metrics.verified_partitions == 1
        h.sink.keep_verified(_owned(0, *both))  # the same again: stays verified
        assert h.sink.metrics.verified_partitions == 1
        h.sink.keep_verified(_owned(0, "accounts-changelog"))  # ids changelog left out
        assert h.sink.metrics.verified_partitions == 0
        await h.sink.verify_restored()  # not processed while faust does not keep its store
        assert h.sink.metrics.verified_partitions == 0
        await h.handle([_usage(0, "e1", "a")])
        assert h.producer().open == []
        h.sink.keep_verified(_owned(0, *both))  # back: restored again, so checked again
        assert h.sink.metrics.verified_partitions == 0
        await h.sink.verify_restored()
        assert h.sink.metrics.verified_partitions == 1

    asyncio.run(run())


def test_nothing_is_processed_before_the_partition_is_verified(
    make_sink: Callable[..., Harness],
) -> None:
    h = make_sink(verified=False)

    async def run() -> None:
        await h.handle([_usage(0, "e1", "a")])
        assert h.producer().open == []
        await h.sink.verify_restored()
        await h.handle([_usage(0, "e1", "a")])
        await h.sink.commit()

    asyncio.run(run())
    assert [e["cause_id"] for e in h.ledger()] == ["e1"]


def test_offsets_of_a_replaced_producer_never_commit_with_its_successor(
    make_sink: Callable[..., Harness],
) -> None:
    """A fenced producer's transaction is aborted with its output; its pending offsets must not
    ride on the new producer's transaction, or the records would be skipped: lost."""
    h = make_sink()

    async def run() -> None:
        await h.handle([_usage(0, "e1", "a")])
        # A re-assignment: the old producer is fenced (its transaction aborted), a new one
        # takes over, and the partition's store is restored from the committed changelog.
        h.producer().abort()
        h.runtime.producers[0] = FakeProducer()
        h.runtime.generation += 1
        h.table.db(0).delete(b"a")
        await h.sink.commit()
        assert h.runtime.committed == {}, "nothing of e1 is committed"
        await h.handle([_usage(0, "e1", "a")])  # re-read from the committed offset
        await h.sink.commit()

    asyncio.run(run())
    assert [e["cause_id"] for e in h.ledger()] == ["e1"]
    assert h.runtime.committed == {TP(TOPICS.usage_events, 0): 1}


def test_records_fetched_again_below_the_pending_offset_are_not_applied_twice(
    make_sink: Callable[..., Harness],
) -> None:
    h = make_sink()

    async def run() -> None:
        await h.handle([_usage(0, "e1", "a"), _usage(1, "e2", "a")])
        await h.handle([_usage(1, "e2", "a"), _usage(2, "e3", "a")])  # a re-fetch after a seek
        await h.sink.commit()
        await h.handle([_usage(2, "e3", "a"), _usage(3, "e4", "a")])  # below the committed one

    asyncio.run(run())
    entries = h.ledger() + h.ledger(committed=False)
    assert [e["cause_id"] for e in entries] == ["e1", "e2", "e3", "e4"]
    assert h.sink.metrics.refetched_skipped == 2


def test_each_partition_commits_its_own_transaction(make_sink: Callable[..., Harness]) -> None:
    h = make_sink(partitions=2)

    async def run() -> None:
        await h.handle([_usage(0, "e1", "a", partition=0), _usage(0, "e2", "b", partition=1)])
        await h.sink.commit()

    asyncio.run(run())
    assert [e["cause_id"] for e in h.ledger(0)] == ["e1"]
    assert [e["cause_id"] for e in h.ledger(1)] == ["e2"]
    assert h.producer(1).committed_offsets == {TP(TOPICS.usage_events, 1): 1}


def test_a_failed_commit_crashes_the_worker(make_sink: Callable[..., Harness]) -> None:
    h = make_sink(fail_commit=True)

    async def run() -> None:
        await h.handle([_usage(0, "e1", "a")])
        with pytest.raises(RuntimeError, match="fenced"):
            await h.sink.commit()

    asyncio.run(run())
    assert len(h.runtime.crashed) == 1
    assert h.runtime.committed == {}


def test_a_commit_that_hangs_stops_the_worker(
    make_sink: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = make_sink(commit_gate=asyncio.Event())  # never set: the commit hangs
    h.sink.liveness.stuck_after_s = 0.05

    async def run() -> None:
        await h.handle([_usage(0, "e1", "a")])
        commit = asyncio.create_task(h.sink.commit())
        await h.sink.liveness.check()
        assert h.runtime.crashed == [], "not before stuck_after_s"
        await asyncio.sleep(0.1)
        await h.sink.liveness.check()
        await h.sink.liveness.check()  # once is enough
        commit.cancel()

    asyncio.run(run())
    assert [type(e).__name__ for e in h.runtime.crashed] == ["StuckError"]
    assert "a commit has run for" in str(h.runtime.crashed[0])
    assert h.runtime.committed == {}
    # The log says where it waited: the await chain down to the producer's commit.
    assert "_commit_locked" in caplog.text and "commit_transaction" in caplog.text


def test_a_batch_that_hangs_in_a_send_stops_the_worker(
    make_sink: Callable[..., Harness],
) -> None:
    h = make_sink()
    h.sink.liveness.stuck_after_s = 0.05

    async def never(batch: FakeBatch, topic: str, *, partition: int) -> None:
        await asyncio.Event().wait()  # a leader that never comes (docs/processor.md item 15)

    h.producer(0).send_batch = never  # type: ignore[method-assign]

    async def run() -> None:
        batch = asyncio.create_task(h.handle([_usage(0, "e1", "a")]))
        await asyncio.sleep(0.1)
        await h.sink.liveness.check()
        batch.cancel()

    asyncio.run(run())
    assert [type(e).__name__ for e in h.runtime.crashed] == ["StuckError"]
    assert "processing a fetched batch" in str(h.runtime.crashed[0])


def test_a_partition_we_do_not_own_is_left_for_its_owner(
    make_sink: Callable[..., Harness],
) -> None:
    h = make_sink()

    async def run() -> None:
        await h.handle([_usage(0, "e9", "z", partition=3)])  # no producer for partition 3

    asyncio.run(run())
    assert h.producer().open == [] and h.sink.metrics.dropped_fetched == 1


def test_a_full_batch_is_sent_and_records_keep_their_order(
    make_sink: Callable[..., Harness],
) -> None:
    h = make_sink(batch_capacity=2)

    async def run() -> None:
        await h.handle([_usage(i, f"e{i}", "a") for i in range(7)])
        await h.sink.commit()

    asyncio.run(run())
    assert [e["seq"] for e in h.ledger()] == list(range(1, 8))


def test_a_repair_is_published_and_committed_at_once(make_sink: Callable[..., Harness]) -> None:
    from pipeline.core import PartitionOutput

    h = make_sink()
    out = PartitionOutput(0, states={"a": StubEngine().dump_state(StubEngine().new_state("a"))})
    out.deleted.append("ghost")
    h.table.db(0)[b"ghost"] = b"{}"

    assert asyncio.run(h.sink.publish(0, out))
    assert asyncio.run(h.sink.publish(7, out)) is False, "not ours: nothing sent"
    keys = [(key, value is None) for t, _, key, value in h.producer().committed]
    assert keys == [(b"a", False), (b"ghost", True)]
    assert h.table.db(0).get(b"ghost") is None
