"""The projection repairs what Redis lost from the ledger by itself (``projections.self_heal``).

Real Kafka and Redis. The consumer is driven with ``poll_once`` (as ``run`` does), so each
test controls when it reads; the periodic sentinel check runs inside ``poll_once``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from conftest import CREDIT, LedgerBuilder

from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.topics import TopicNames
from projections.apply import Projector
from projections.consumer import ProjectionConsumer
from projections.enforcement import Enforcer
from projections.keys import account_keys, account_pattern, sentinel_key, sentinel_pattern
from projections.rebuild import clear, compare, rebuild, snapshot
from projections.self_heal import READY, SelfHeal

pytestmark = pytest.mark.integration

PARTITIONS = 6
HEAL_WITHIN_S = 10.0
"""'Within a few seconds': the sentinel is checked every second, the replay is small."""


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec(load_registry(), LEDGER_ENTRY)


def produce(
    bootstrap: str, topic: str, codec: AvroCodec, placed: list[tuple[int, dict[str, Any]]]
) -> None:
    """(partition, entry) pairs, in order: each account's entries stay in one partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition, entry in placed:
        key = entry["account_id"].encode()
        producer.produce(topic, key=key, value=codec.encode(entry), partition=partition)
    assert producer.flush(30) == 0


def high_watermarks(bootstrap: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def drain(worker: ProjectionConsumer, until: Callable[[], bool], timeout: float = 30) -> float:
    """Poll until ``until()``; return the seconds it took."""
    started = time.monotonic()
    while not until():
        assert time.monotonic() - started < timeout, worker.metrics
        worker.poll_once()
    return time.monotonic() - started


def seq_of(client: redis.Redis, prefix: str, account: str) -> int:
    return int(client.hget(account_keys(prefix, account).balance, "seq") or 0)


def all_applied(client: redis.Redis, prefix: str, accounts: list[LedgerBuilder]) -> bool:
    return all(seq_of(client, prefix, a.account) == a.seq for a in accounts)


def history(a: LedgerBuilder, debits: int) -> list[dict[str, Any]]:
    """A plan, a grant and some debits: an account with a few entries to replay."""
    return [a.plan("allow", limit=5 * CREDIT), a.grant("g", 20 * CREDIT)] + [
        a.debit(CREDIT) for _ in range(debits)
    ]


@pytest.fixture
def worker_for(
    kafka_bootstrap: str, topics: TopicNames, rclient: redis.Redis, codec: AvroCodec
) -> Iterator[Callable[[str], ProjectionConsumer]]:
    made: list[ProjectionConsumer] = []

    def make(prefix: str) -> ProjectionConsumer:
        made.append(
            ProjectionConsumer(
                bootstrap=kafka_bootstrap,
                topics=topics,
                client=rclient,
                prefix=prefix,
                decode=codec.decode,
                group_id=f"proj-{uuid.uuid4().hex[:8]}",
                poll_timeout_s=0.2,
            )
        )
        return made[-1]

    yield make
    for worker in made:
        worker.close()


def heal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("self-heal (")]


def test_flushall_is_rebuilt_from_the_ledger_without_new_entries(
    stack: Any,
    kafka_bootstrap: str,
    topics: TopicNames,
    rclient: redis.Redis,
    make_prefix: Callable[[], str],
    ledger: type[LedgerBuilder],
    codec: AvroCodec,
    worker_for: Callable[[str], ProjectionConsumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="metering.projection")
    live = make_prefix()
    accounts = [ledger(f"flush-{i}") for i in range(12)]
    placed = [(i % PARTITIONS, e) for i, a in enumerate(accounts) for e in history(a, 3 + i)]
    placed.append((0, accounts[0].debit(30 * CREDIT)))  # into overage
    produce(kafka_bootstrap, topics.credit_ledger, codec, placed)

    worker = worker_for(live)
    drain(worker, lambda: all_applied(rclient, live, accounts))
    assert rclient.get(sentinel_key(live, topics.credit_ledger, 0)) == READY
    enforcer = Enforcer(rclient, live)
    hold = enforcer.reserve("flush-1", 2 * CREDIT, ttl_s=60)  # lost with the data
    assert hold and enforcer.balance("flush-1").reserved == 2 * CREDIT  # type: ignore[union-attr]
    before = snapshot(rclient, live)
    assert len(before) == len(accounts) and worker.metrics.self_heals == 0
    ends = high_watermarks(kafka_bootstrap, topics.credit_ledger)

    if stack.kind == "env":  # a Redis we do not own: lose only this test's keys
        doomed = [*rclient.scan_iter(match=account_pattern(live), count=1000)]
        rclient.unlink(*doomed, *rclient.scan_iter(match=sentinel_pattern(live)))
    else:  # Redis lost everything, scripts too (a restart without persistence)
        rclient.flushall()
        rclient.script_flush()
    assert enforcer.check("flush-3", None, 1).reason == "unknown_account"

    took = drain(worker, lambda: snapshot(rclient, live) == before, timeout=HEAL_WITHIN_S)
    assert high_watermarks(kafka_bootstrap, topics.credit_ledger) == ends  # no new entries
    assert worker.metrics.self_heals >= 1 and worker.metrics.self_heal_errors == 0
    assert worker.metrics.self_heal_accounts >= len(accounts)
    lines = heal_lines(caplog)
    assert lines and "sentinel missing" in lines[0] and "partitions [0, 1, 2, 3, 4, 5]" in lines[0]
    assert f"{len(accounts)} accounts" in lines[0], lines
    assert rclient.get(sentinel_key(live, topics.credit_ledger, 3)) == READY
    for a in accounts:
        balance = enforcer.balance(a.account)
        assert balance is not None and balance.available == a.balance, a.account
    flushed = enforcer.balance("flush-1")
    assert flushed is not None and flushed.reserved == 0  # the lost hold is not resurrected
    assert enforcer.check("flush-3", None, 1).allowed
    print(f"rebuilt {len(accounts)} accounts {took:.2f}s after the loss")

    rebuilt = make_prefix()
    report = rebuild(
        bootstrap=kafka_bootstrap,
        topics=topics,
        client=rclient,
        prefix=rebuilt,
        decode=codec.decode,
        timeout_s=60,
    )
    assert report.gaps == [] and report.accounts == len(accounts)
    assert compare(rclient, live, rebuilt) == []


def test_gap_with_lost_account_keys_rebuilds_that_account(
    kafka_bootstrap: str,
    topics: TopicNames,
    rclient: redis.Redis,
    make_prefix: Callable[[], str],
    ledger: type[LedgerBuilder],
    codec: AvroCodec,
    worker_for: Callable[[str], ProjectionConsumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="metering.projection")
    live = make_prefix()
    gone, evicted, neighbour = ledger("lost-all"), ledger("lost-bal"), ledger("neighbour")
    others = [ledger(f"other-{i}") for i in range(4)]
    placed = [(2, e) for a in (gone, evicted, neighbour) for e in history(a, 4)]
    placed += [(i, e) for i, a in enumerate(others) for e in history(a, 2)]
    produce(kafka_bootstrap, topics.credit_ledger, codec, placed)
    accounts = [gone, evicted, neighbour, *others]

    worker = worker_for(live)
    drain(worker, lambda: all_applied(rclient, live, accounts))
    enforcer = Enforcer(rclient, live)
    kept_hold = enforcer.reserve("lost-bal", 3 * CREDIT, ttl_s=60)
    assert kept_hold and enforcer.reserve("lost-all", CREDIT, ttl_s=60)
    before = snapshot(rclient, live)

    # One account loses every key, another only its balance and grants (its hold stays).
    rclient.unlink(*account_keys(live, "lost-all").as_list())
    rclient.unlink(account_keys(live, "lost-bal").balance, account_keys(live, "lost-bal").grants)
    produce(kafka_bootstrap, topics.credit_ledger, codec, [(2, gone.debit(CREDIT))])
    produce(kafka_bootstrap, topics.credit_ledger, codec, [(2, evicted.debit(2 * CREDIT))])
    drain(worker, lambda: all_applied(rclient, live, accounts))

    assert worker.metrics.self_heal_errors == 0 and worker.metrics.gaps == 0
    assert worker.metrics.self_heal_accounts <= 2  # never the whole partition
    lines = heal_lines(caplog)
    assert lines and all("account keys gone" in line for line in lines), lines
    assert not any("sentinel missing" in line for line in lines), lines
    assert "neighbour" not in " ".join(lines)
    after = snapshot(rclient, live)
    for a in (neighbour, *others):
        assert after[a.account] == before[a.account], a.account
    lost_all, lost_bal = enforcer.balance("lost-all"), enforcer.balance("lost-bal")
    assert lost_all is not None and lost_bal is not None
    assert (lost_all.available, lost_all.seq, lost_all.reserved) == (gone.balance, gone.seq, 0)
    # The surviving hold is counted once, not resurrected twice or dropped.
    assert (lost_bal.available, lost_bal.reserved) == (evicted.balance, 3 * CREDIT)
    assert enforcer.release(kept_hold)
    assert enforcer.balance("lost-bal").reserved == 0  # type: ignore[union-attr]

    rebuilt = make_prefix()
    rebuild(
        bootstrap=kafka_bootstrap,
        topics=topics,
        client=rclient,
        prefix=rebuilt,
        decode=codec.decode,
        timeout_s=60,
    )
    assert compare(rclient, live, rebuilt) == []


def test_gap_with_keys_behind_is_replayed_in_place(
    kafka_bootstrap: str,
    topics: TopicNames,
    rclient: redis.Redis,
    make_prefix: Callable[[], str],
    ledger: type[LedgerBuilder],
    codec: AvroCodec,
    worker_for: Callable[[str], ProjectionConsumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Keys restored from an older snapshot: the entries they miss come from the ledger."""
    caplog.set_level(logging.INFO, logger="metering.projection")
    live = make_prefix()
    a = ledger("behind")
    produce(kafka_bootstrap, topics.credit_ledger, codec, [(4, e) for e in history(a, 2)])
    worker = worker_for(live)
    drain(worker, lambda: all_applied(rclient, live, [a]))
    keys = account_keys(live, "behind")
    old = {key: rclient.dump(key) for key in (keys.balance, keys.grants)}

    produce(kafka_bootstrap, topics.credit_ledger, codec, [(4, a.debit(CREDIT)) for _ in range(3)])
    drain(worker, lambda: all_applied(rclient, live, [a]))
    for key, value in old.items():
        assert value is not None
        rclient.restore(key, 0, value, replace=True)
    assert seq_of(rclient, live, "behind") == a.seq - 3

    produce(kafka_bootstrap, topics.credit_ledger, codec, [(4, a.debit(CREDIT))])
    drain(worker, lambda: all_applied(rclient, live, [a]))
    assert worker.metrics.gaps == 0 and worker.metrics.self_heals == 1
    lines = heal_lines(caplog)
    assert len(lines) == 1 and "account behind" in lines[0] and "3 applied" in lines[0], lines
    balance = Enforcer(rclient, live).balance("behind")
    assert balance is not None and balance.available == a.balance

    rebuilt = make_prefix()
    rebuild(
        bootstrap=kafka_bootstrap,
        topics=topics,
        client=rclient,
        prefix=rebuilt,
        decode=codec.decode,
        timeout_s=60,
    )
    assert compare(rclient, live, rebuilt) == []


def test_gap_the_ledger_cannot_fill_still_holds_the_partition(
    kafka_bootstrap: str,
    topics: TopicNames,
    rclient: redis.Redis,
    make_prefix: Callable[[], str],
    ledger: type[LedgerBuilder],
    codec: AvroCodec,
    worker_for: Callable[[str], ProjectionConsumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="metering.projection")
    live = make_prefix()
    x = ledger("real-gap")
    produce(kafka_bootstrap, topics.credit_ledger, codec, [(1, e) for e in history(x, 1)])
    worker = worker_for(live)
    drain(worker, lambda: all_applied(rclient, live, [x]))
    stored = x.seq
    before = snapshot(rclient, live, "real-gap")

    missing = x.debit(CREDIT)  # not in the ledger yet
    produce(kafka_bootstrap, topics.credit_ledger, codec, [(1, x.debit(CREDIT))])
    drain(worker, lambda: worker.metrics.gaps >= 3, timeout=20)  # held, retried, logged
    assert snapshot(rclient, live, "real-gap") == before  # nothing applied past the hole
    assert worker.metrics.paused_partitions == 1
    held = worker.consumer.committed([TopicPartition(topics.credit_ledger, 1)], timeout=10)
    assert held[0].offset == stored  # not committed past the gapped entry
    assert worker.metrics.self_heals == 1  # the ledger was asked once, not at every retry
    lines = heal_lines(caplog)
    assert len(lines) == 1 and "account behind" in lines[0], lines
    assert f"still gapped, held: real-gap: stored {stored}, got {stored + 2}" in lines[0]

    produce(kafka_bootstrap, topics.credit_ledger, codec, [(1, missing)])
    drain(worker, lambda: all_applied(rclient, live, [x]), timeout=60)
    balance = Enforcer(rclient, live).balance("real-gap")
    assert balance is not None and balance.available == x.balance


def test_sentinel_lost_during_a_replay_is_not_marked_ready(
    kafka_bootstrap: str,
    topics: TopicNames,
    rclient: redis.Redis,
    prefix: str,
    ledger: type[LedgerBuilder],
    codec: AvroCodec,
) -> None:
    """Redis losing data again mid-replay leaves the sentinel missing: the next check redoes it."""
    a = ledger("twice")
    produce(kafka_bootstrap, topics.credit_ledger, codec, [(3, e) for e in history(a, 2)])
    key = sentinel_key(prefix, topics.credit_ledger, 3)

    def decode_and_lose(value: bytes) -> dict[str, Any]:
        rclient.delete(key)  # as if Redis were flushed again while the replay runs
        return codec.decode(value)

    heal = SelfHeal(
        bootstrap=kafka_bootstrap,
        topic=topics.credit_ledger,
        client=rclient,
        projector=Projector(rclient, prefix),
        decode=decode_and_lose,
        timeout_s=60,
    )
    assert heal.missing([3]) == [3]
    repair = heal.rebuild_partitions({3: a.seq}, "test")
    assert (repair.accounts, repair.applied, repair.lost_again) == (["twice"], a.seq, [3])
    assert "Redis lost data again" in repair.describe()
    assert heal.missing([3]) == [3]

    heal.decode = codec.decode
    repair = heal.rebuild_partitions({3: a.seq}, "test")
    assert (repair.applied, repair.lost_again) == (0, [])  # idempotent: all skipped
    assert heal.missing([3, 0]) == [0]
    assert seq_of(rclient, prefix, "twice") == a.seq

    # Clearing the whole prefix (`rebuild --live`) drops the sentinels too: the live
    # projection then replays its partitions once instead of account by account.
    clear(rclient, prefix, None, keep_holds=True)
    assert heal.missing([3]) == [3] and seq_of(rclient, prefix, "twice") == 0
