"""``metering reconcile`` audits the ledger topic itself, against real Kafka (and chDB, Redis).

The ledgers are real engine output, encoded with the project's Avro codec onto this test's own
topics; the broken ones are that output altered the way a buggy writer would. A ledger that is
wrong everywhere (ClickHouse and Redis hold the same wrong numbers) must still fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import pytest
import redis
from confluent_kafka import Producer

from consumers.clickhouse import connect
from consumers.ledger_audit import BALANCE_AFTER, DUPLICATE_ENTRY_ID, SEQ_RESTART
from consumers.reconcile import audit_ledger_topic, main
from consumers.sink import ClickHouseSink
from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.domain import (
    MICROS_PER_CREDIT,
    CommandKind,
    CreditCommand,
    CreditEngine,
    EntryType,
    LedgerEntry,
    UsageEvent,
    load_plans,
    load_price_book,
)
from metering.domain.periods import parse_instant
from metering.topics import TopicNames
from projections.keys import account_keys, prefix_from_env

pytestmark = pytest.mark.integration

CREDIT = MICROS_PER_CREDIT
DAY = 86_400_000
T0 = parse_instant("2025-11-20T00:00:00Z")
ACCOUNTS = ("rl-acme", "rl-globex")
SUBJECTS = ("design", "research")


def sound_ledger() -> list[LedgerEntry]:
    """Per account: a plan, a promotion, usage, a period reset (with rollover), more usage."""
    engine = CreditEngine(load_price_book(), load_plans())
    ledger: list[LedgerEntry] = []
    for account in ACCOUNTS:
        state = engine.new_state(account)
        commands = [
            CreditCommand(
                f"{account}-plan", account, CommandKind.ASSIGN_PLAN, T0, plan_id="growth"
            ),
            CreditCommand(
                f"{account}-promo",
                account,
                CommandKind.PROMOTION,
                T0 + 1,
                amount=50 * CREDIT,
                expires_at=T0 + 3 * DAY,
            ),
        ]
        for cmd in commands:
            ledger += engine.apply_command(state, cmd, cmd.issued_at).entries
        for i in range(12):
            at = T0 + 2 + i * DAY
            event = UsageEvent(
                f"{account}-e{i}",
                account,
                "image_generation",
                {"images": 1 + i % 3},
                at,
                subject=SUBJECTS[i % 2],
            )
            ledger += engine.apply_usage(state, event, at).entries
    return ledger


def produce(bootstrap: str, topic: str, ledger: Iterable[LedgerEntry]) -> None:
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for entry in ledger:
        producer.produce(topic, key=entry.account_id, value=codec.encode(entry.to_record()))
    assert producer.flush(30) == 0


def last(ledger: list[LedgerEntry], account: str) -> LedgerEntry:
    return [e for e in ledger if e.account_id == account][-1]


def sink_and_project(
    bootstrap: str,
    clickhouse_url: str,
    database: str,
    redis_url: str,
    topics: TopicNames,
    ledger: list[LedgerEntry],
) -> None:
    """Load the topic into ClickHouse and set Redis as the projection would: the stores agree
    with the ledger, whatever the ledger says."""
    ClickHouseSink(
        bootstrap=bootstrap,
        client=connect(clickhouse_url, database),
        topics=topics,
        group=f"sink-{uuid.uuid4().hex[:8]}",
        max_wait_s=0.2,
    ).run(exit_when_caught_up=True, max_seconds=90)
    conn = redis.Redis.from_url(redis_url)
    prefix = prefix_from_env()
    for account in ACCOUNTS:
        balance = last(ledger, account).balance_after
        conn.hset(account_keys(prefix, account).balance, "available", balance)


def test_sound_ledger_reconciles_clean(
    kafka_bootstrap: str,
    clickhouse_url: str,
    redis_url: str,
    ch_database: str,
    topics: TopicNames,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = sound_ledger()
    produce(kafka_bootstrap, topics.credit_ledger, ledger)
    assert audit_ledger_topic(kafka_bootstrap, topics.credit_ledger) == []

    assert main(["--topic-prefix", topics.prefix, "--ledger-only"]) == 0
    out = capsys.readouterr().out
    assert f"ledger audit: {len(ledger)} entries, 0 violations" in out
    assert "reconcile:" not in out

    sink_and_project(kafka_bootstrap, clickhouse_url, ch_database, redis_url, topics, ledger)
    assert main(["--database", ch_database, "--topic-prefix", topics.prefix]) == 0, (
        capsys.readouterr().out
    )
    out = capsys.readouterr().out
    assert f"ledger audit: {len(ledger)} entries, 0 violations" in out
    assert "2 accounts, 0 mismatched" in out


def test_ledger_wrong_everywhere_fails(
    kafka_bootstrap: str,
    clickhouse_url: str,
    redis_url: str,
    ch_database: str,
    topics: TopicNames,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The last balance of one account is off by one micro-credit in the topic, in ClickHouse
    and in Redis alike: the stores agree, only the ledger audit sees it."""
    ledger = sound_ledger()
    end = last(ledger, "rl-globex")
    i = ledger.index(end)
    ledger[i] = end._replace(balance_after=end.balance_after + 1)
    produce(kafka_bootstrap, topics.credit_ledger, ledger)
    sink_and_project(kafka_bootstrap, clickhouse_url, ch_database, redis_url, topics, ledger)

    assert main(["--database", ch_database, "--topic-prefix", topics.prefix, "--settle", "0"]) == 1
    out = capsys.readouterr().out
    assert f"ledger: rl-globex seq {end.seq}: balance_after {end.balance_after + 1} != " in out
    assert f"ledger audit: {len(ledger)} entries, 1 violations in 1 accounts: rl-globex" in out
    assert "2 accounts, 0 mismatched" in out  # ClickHouse and Redis agree with the topic


def seq_restart(ledger: list[LedgerEntry]) -> tuple[list[LedgerEntry], str, str]:
    """The processor lost rl-acme's state and started it over from seq 1."""
    engine = CreditEngine(load_price_book(), load_plans())
    state = engine.new_state("rl-acme")
    at = T0 + 30 * DAY
    cmd = CreditCommand("rl-acme-again", "rl-acme", CommandKind.ASSIGN_PLAN, at, plan_id="growth")
    restarted = engine.apply_command(state, cmd, at).entries
    expected = last(ledger, "rl-acme").seq + 1
    return (
        [*ledger, *restarted],
        SEQ_RESTART,
        f"ledger: rl-acme seq 1: seq restarts (expected {expected})",
    )


def duplicate_entry_id(ledger: list[LedgerEntry]) -> tuple[list[LedgerEntry], str, str]:
    """A usage event charged twice under the same entry id; seq and balances stay consistent."""
    end = last(ledger, "rl-acme")
    debits = [e for e in ledger if e.account_id == "rl-acme" and e.type is EntryType.USAGE_DEBIT]
    debit = debits[-1]
    again = debit._replace(
        seq=end.seq + 1,
        balance_after=end.balance_after + debit.amount,
        overage_after=end.overage_after,
    )
    line = (
        f"ledger: rl-acme seq {end.seq + 1}: entry_id {debit.entry_id!r} duplicates the entry "
        f"at rl-acme seq {debit.seq}"
    )
    return [*ledger, again], DUPLICATE_ENTRY_ID, line


def broken_balance_chain(ledger: list[LedgerEntry]) -> tuple[list[LedgerEntry], str, str]:
    """One debit's balance_after is 1 micro-credit off: it breaks the link to the entry before
    it and the link to the entry after it."""
    debits = [e for e in ledger if e.account_id == "rl-globex" and e.type is EntryType.USAGE_DEBIT]
    e = debits[len(debits) // 2]
    ledger = [x._replace(balance_after=x.balance_after + 1) if x is e else x for x in ledger]
    previous = e.balance_after - e.amount
    line = (
        f"ledger: rl-globex seq {e.seq}: balance_after {e.balance_after + 1} != previous "
        f"balance_after {previous} + allocations {e.amount:+d} = {e.balance_after}"
    )
    return ledger, BALANCE_AFTER, line


Breaker = Callable[[list[LedgerEntry]], tuple[list[LedgerEntry], str, str]]


@pytest.mark.parametrize("breaker", [seq_restart, duplicate_entry_id, broken_balance_chain])
def test_broken_ledger_fails_reconcile(
    breaker: Breaker,
    kafka_bootstrap: str,
    topics: TopicNames,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger, kind, line = breaker(sound_ledger())
    produce(kafka_bootstrap, topics.credit_ledger, ledger)

    assert main(["--topic-prefix", topics.prefix, "--ledger-only"]) == 1
    out = capsys.readouterr().out
    assert line in out.splitlines(), out
    assert f"ledger audit: {len(ledger)} entries, " in out

    violations = audit_ledger_topic(kafka_bootstrap, topics.credit_ledger)
    assert line in [str(v) for v in violations]
    assert kind in {v.kind for v in violations}
    if breaker is duplicate_entry_id:
        assert [v.kind for v in violations] == [DUPLICATE_ENTRY_ID]
    if breaker is broken_balance_chain:
        assert [v.kind for v in violations] == [BALANCE_AFTER, BALANCE_AFTER]


def test_a_missing_topic_or_database_is_one_clear_line_and_exit_2(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--ledger-only", "--topic-prefix", f"nosuch{uuid.uuid4().hex[:6]}."]) == 2
    err = capsys.readouterr().err
    assert "credit-ledger not found (is --topic-prefix right?)" in err
    assert "Traceback" not in err
    assert main(["--database", f"nosuch_{uuid.uuid4().hex[:6]}", "--no-redis"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
