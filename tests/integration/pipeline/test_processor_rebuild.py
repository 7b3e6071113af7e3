"""A restored state that disagrees with the ledger is rebuilt, never trusted and never a crash.

The ledger is the source of truth and the account table only a cache of it (design invariant
6). These tests take the cache away behind the worker's back, between two runs:

* the changelog topics and the local stores are all gone: every account is rebuilt from the
  ledger alone (a fold from the start), event ids included, so re-sent events stay duplicates;
* the changelog's newest record of each account is an old state or a tombstone: each account
  is caught up from that snapshot (or from nothing) with the ledger's tail.

Either way the ledger must go on exactly as the engine's pure fold of the same input.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from processor_harness import (
    Input,
    Worker,
    decode_ledger,
    make_input,
    normalise,
    produce,
    pure_fold,
    read_topic,
)
from test_processor_crash import _check, _setup

from metering.topic_reader import read_to_end
from metering.topics import TopicNames

pytestmark = pytest.mark.integration


def _first_half(
    bootstrap: str, topics: TopicNames, inp: Input, worker: Worker
) -> list[tuple[str, str, bytes, int]]:
    half = inp.usage[: len(inp.usage) // 2]
    worker.start()
    _setup(bootstrap, topics, inp)
    produce(bootstrap, half)
    first = normalise(pure_fold(Input(commands=inp.commands, usage=half)))
    n_first = sum(len(v) for v in first.values())
    assert decode_ledger(read_topic(bootstrap, topics.credit_ledger, n_first, timeout=90)) == first
    worker.stop()
    return half


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        future.result()
    deadline = time.monotonic() + 30
    while set(names) & set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, f"topics {names} were not deleted"
        time.sleep(0.2)


def _finish(
    bootstrap: str,
    topics: TopicNames,
    inp: Input,
    worker: Worker,
    resent: list[tuple[str, str, bytes, int]],
) -> None:
    """The second half of the usage, then every event of the first half again: the ledger must
    be the pure fold of the whole input (the re-sent events charge nothing)."""
    expected = normalise(pure_fold(inp, extra=resent))
    n_expected = sum(len(v) for v in expected.values())
    worker.start()
    worker.wait_restored()
    produce(bootstrap, inp.usage[len(inp.usage) // 2 :])
    produce(bootstrap, resent)
    ledger = decode_ledger(read_topic(bootstrap, topics.credit_ledger, n_expected, timeout=120))
    _check(ledger, expected)
    assert worker.gauge("metering_processor_restore_rebuilt_accounts_total") > 0


def test_lost_changelogs_and_stores_are_rebuilt_from_the_ledger(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    inp = make_input(topics, accounts=20, events=800, seed=11)
    first = Worker(kafka_bootstrap, topics, "rebuild", tmp_path / "first")
    try:
        resent = _first_half(kafka_bootstrap, topics, inp, first)
    finally:
        first.stop()
    app_id = f"{topics.prefix}rebuild"
    _delete_topics(
        kafka_bootstrap, [f"{app_id}-accounts-changelog", f"{app_id}-event_ids-changelog"]
    )
    second = Worker(kafka_bootstrap, topics, "rebuild", tmp_path / "second")  # no local store
    try:
        _finish(kafka_bootstrap, topics, inp, second, resent)
        assert "rebuilt" in second.log_path.read_text()
    finally:
        second.stop()


def test_stale_or_deleted_changelog_states_are_caught_up_from_the_ledger(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """Between two runs, each account's newest changelog record is replaced: by its *first*
    state (a snapshot far behind the ledger) for half the accounts, by a tombstone for the
    others. Both are committed records, so faust restores them faithfully; the check finds
    every account behind its ledger and catches it up (snapshot plus the ledger's tail, or a
    fold from the start)."""
    inp = make_input(topics, accounts=20, events=800, seed=12)
    worker = Worker(kafka_bootstrap, topics, "stale", tmp_path)
    try:
        resent = _first_half(kafka_bootstrap, topics, inp, worker)
        changelog = f"{topics.prefix}stale-accounts-changelog"
        first: dict[bytes, tuple[int, bytes]] = {}
        for batch in read_to_end(kafka_bootstrap, changelog):
            for msg in batch:
                if msg.value() is not None:
                    first.setdefault(msg.key(), (msg.partition(), msg.value()))
        assert len(first) == 20
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for n, (key, (partition, value)) in enumerate(sorted(first.items())):
            producer.produce(
                changelog, key=key, value=value if n % 2 else None, partition=partition
            )
        assert producer.flush(30) == 0
        _finish(kafka_bootstrap, topics, inp, worker, resent)
    finally:
        worker.stop()


def test_an_id_store_restored_without_its_newest_ids_is_rebuilt_from_the_ledger(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """Between two runs the id store's changelog loses every chunk (a tombstone each) while the
    account states stay whole: each restored account agrees with the ledger by ``seq``, but
    remembers none of its events. The check finds that the last charged event of each account
    is not remembered and rebuilds the account from the ledger, ids included: every event of
    the first half, re-sent, is still a duplicate (docs/processor.md, item 14)."""
    inp = make_input(topics, accounts=20, events=800, seed=13)
    worker = Worker(kafka_bootstrap, topics, "ids", tmp_path)
    try:
        resent = _first_half(kafka_bootstrap, topics, inp, worker)
        changelog = f"{topics.prefix}ids-event_ids-changelog"
        chunks: dict[bytes, int] = {}
        for batch in read_to_end(kafka_bootstrap, changelog):
            for msg in batch:
                if msg.value() is not None:
                    chunks[msg.key()] = msg.partition()
        assert chunks
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for key, partition in chunks.items():
            producer.produce(changelog, key=key, value=None, partition=partition)
        assert producer.flush(30) == 0
        _finish(kafka_bootstrap, topics, inp, worker, resent)
        assert "does not remember the last charged event" in worker.log_path.read_text()
    finally:
        worker.stop()
