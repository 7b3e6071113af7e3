"""``usage_daily`` counts accepted usage events once, with real Kafka, the sink and chDB.

The ledger comes from the real credit engine, so its entries have the shapes the processor
writes: an event sent twice (one debit), two events the processor dead-letters (unknown feature,
negative quantity: no ledger entry), a debit that runs into overage (USAGE_DEBIT + OVERAGE), an
overage-only event, a partially rejected event (USAGE_DEBIT + USAGE_REJECTED), a wholly
rejected one (USAGE_REJECTED only), a voided one (USAGE_REVERSED: netted into its own row) and
an amended one (USAGE_REVERSED, then its new charge).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers import queries
from consumers.clickhouse import connect, ensure_database
from consumers.migrations import applied_versions, load_migrations, migrate
from consumers.reconcile import rollup_vs_raw
from consumers.rows import LEDGER_COLUMNS, USAGE_COLUMNS, ledger_row, usage_row
from consumers.sink import ClickHouseSink
from metering.avro import LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
from metering.domain import (
    CommandKind,
    CreditCommand,
    CreditEngine,
    DomainError,
    EngineConfig,
    UsageEvent,
    load_price_book,
    plans_from_text,
)
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
DAY = 86_400_000
PERIOD = queries.Period(date(2025, 12, 1), date(2026, 1, 1))
PLANS = """
plans:
  small-allow:
    monthly_credits: 30
    anchor_day: 1
    rollover: none
    overage: {policy: allow, limit: 100}
    topups: true
    alert_thresholds: [100]
  small-block:
    monthly_credits: 30
    anchor_day: 1
    rollover: none
    overage: {policy: block}
    topups: true
    alert_thresholds: [100]
"""

# (account, subject, feature, model, day) -> (credits, overage_credits, events, rejected_events,
# usage_records, units); micro-credits. Day 1 images cost 25 credits, day 2 texts 1.09 credits.
EXPECTED: dict[tuple[str, str, str, str, str], tuple[int, int, int, int, int, dict[str, int]]] = {
    # img1 sent twice (one debit, 25), img2: debit 5 + overage 20, then voided (all 25 back,
    # the overage too). One event left; the units of both stay (the records were received).
    ("allow", "design", "image_generation", "", "2025-12-01"): (
        25_000_000, 0, 1, 0, 3, {"images": 2},
    ),
    # Overage only (no grant left): accepted. Then amended to 2 requests (2.09 credits), paid
    # by the 5 credits img2's void gave back: the 1.09 of overage is reversed. Still one
    # event; the units are the record's (as received).
    ("allow", "research", "text_generation", "gpt-4o-mini", "2025-12-02"): (
        2_090_000, 0, 1, 0, 1, {"requests": 1, "input_tokens": 900},
    ),
    # Dead-lettered by the processor (unknown feature, negative quantity): records only.
    ("allow", "research", "teleport", "", "2025-12-02"): (0, 0, 0, 0, 1, {}),
    ("allow", "research", "text_generation", "", "2025-12-02"): (0, 0, 0, 0, 1, {}),
    # img1 sent twice, img2: debit 5 + USAGE_REJECTED 20 (partly rejected, still accepted).
    ("block", "design", "image_generation", "", "2025-12-01"): (
        30_000_000, 0, 2, 0, 3, {"images": 2},
    ),
    # Wholly rejected (USAGE_REJECTED only): not an event, one rejected event.
    ("block", "research", "text_generation", "gpt-4o-mini", "2025-12-02"): (0, 0, 0, 1, 1, {}),
    ("block", "research", "teleport", "", "2025-12-02"): (0, 0, 0, 0, 1, {}),
    ("block", "research", "text_generation", "", "2025-12-02"): (0, 0, 0, 0, 1, {}),
}  # fmt: skip

# Per account, the events the ledger never accepted, and the re-sent copy of img1.
LEFT_IN_BALANCE = {
    ("allow", "allow-img1", 1), ("allow", "allow-bad", 1), ("allow", "allow-neg", 1),
    ("block", "block-img1", 1), ("block", "block-txt", 1), ("block", "block-bad", 1),
    ("block", "block-neg", 1),
}  # fmt: skip


@dataclass
class Story:
    """Usage records as sent (copies included) and the ledger the engine wrote for them."""

    usage: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    split_after: set[str] = field(default_factory=set)
    """entry_ids directly followed by another usage entry of the same event."""


def make_story() -> Story:
    engine = CreditEngine(
        load_price_book(), plans_from_text(PLANS), EngineConfig(charge_window=True)
    )
    story = Story()
    for account, plan in (("allow", "small-allow"), ("block", "small-block")):
        state = engine.new_state(account)
        assign = CreditCommand(
            f"{account}-plan", account, CommandKind.ASSIGN_PLAN, T0, plan_id=plan
        )
        story.ledger += [e.to_record() for e in engine.apply_command(state, assign, T0).entries]
        img1 = UsageEvent(f"{account}-img1", account, "image_generation", {"images": 1}, T0 + 1_000,
                          subject="design", source="test")  # fmt: skip
        events = [
            img1,
            img1,  # sent twice
            img1._replace(event_id=f"{account}-img2", occurred_at=T0 + 2_000),
            UsageEvent(f"{account}-txt", account, "text_generation",
                       {"requests": 1, "input_tokens": 900}, T0 + DAY + 1, subject="research",
                       model="gpt-4o-mini"),
            UsageEvent(f"{account}-bad", account, "teleport", {"requests": 1}, T0 + DAY + 2,
                       subject="research"),
            UsageEvent(f"{account}-neg", account, "text_generation", {"requests": -3},
                       T0 + DAY + 3, subject="research"),
        ]  # fmt: skip
        for event in events:
            story.usage.append(event.to_record())
            try:
                outcome = engine.apply_usage(state, event, event.occurred_at)
            except DomainError:
                continue  # the processor dead-letters it: no ledger entry
            entries = [e.to_record() for e in outcome.entries]
            story.ledger += entries
            story.split_after |= {e["entry_id"] for e in entries[:-1]}
        if account == "allow":
            void = CreditCommand("allow-void", account, CommandKind.VOID_USAGE, T0 + 2 * DAY,
                                 event_id="allow-img2", reason="refund")  # fmt: skip
            amend = CreditCommand("allow-amend", account, CommandKind.AMEND_USAGE,
                                  T0 + 2 * DAY + 1, event_id="allow-txt",
                                  units={"requests": 2, "input_tokens": 900})  # fmt: skip
            for cmd in (void, amend):
                outcome = engine.apply_command(state, cmd, cmd.issued_at)
                assert outcome.rejection is None
                story.ledger += [e.to_record() for e in outcome.entries]
    return story


def expected_types(story: Story) -> list[tuple[str, str]]:
    return [
        (e["cause_id"], e["type"])
        for e in story.ledger
        if "USAGE" in e["type"] or e["type"] == "OVERAGE"
    ]


def produce(bootstrap: str, topics: TopicNames, usage: list[Any], ledger: list[Any]) -> None:
    registry = load_registry()
    usage_codec, ledger_codec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, LEDGER_ENTRY)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for rec in usage:
        producer.produce(topics.usage_events, key=rec["account_id"], value=usage_codec.encode(rec))
    for rec in ledger:
        producer.produce(
            topics.credit_ledger, key=rec["account_id"], value=ledger_codec.encode(rec)
        )
    assert producer.flush(30) == 0


def sink(bootstrap: str, url: str, database: str, topics: TopicNames, group: str) -> None:
    """Consume everything produced so far (offsets committed in ``group``), then stop."""
    ClickHouseSink(
        bootstrap=bootstrap,
        client=connect(url, database),
        topics=topics,
        group=group,
        max_wait_s=0.2,
    ).run(exit_when_caught_up=True, max_seconds=90)


def usage_daily(client: Any) -> dict[tuple[str, ...], tuple[Any, ...]]:
    rows = client.query(
        "SELECT account_id, subject, feature, model, toString(day), credits, overage_credits, "
        "events, rejected_events, usage_records, units FROM usage_daily"
    ).result_rows
    out = {tuple(r[:5]): tuple(r[5:]) for r in rows}
    assert len(out) == len(rows)  # one row per (account, subject, feature, model, day)
    return out


def assert_queries_agree(client: Any) -> None:
    """The read API through the view equals the raw tables, and the rollup credits reconcile."""
    for account in ("allow", "block"):
        for by in queries.DIMENSIONS:
            rows = queries.usage_by(client, account, PERIOD, by)
            assert rows == queries.usage_by(client, account, PERIOD, by, raw=True), (account, by)
    by_subject = {r["key"]: r for r in queries.usage_by(client, "allow", PERIOD, "subject")}
    assert by_subject["design"]["events"] == 1 and by_subject["research"]["events"] == 1
    assert by_subject["research"]["units"] == {"requests": 1, "input_tokens": 900}
    daily = queries.daily_series(client, "block", PERIOD)
    # Day 2 of "block" holds refused records only: no accepted usage, no row.
    assert [(str(r["day"]), r["events"], r["units"]) for r in daily] == [
        ("2025-12-01", 2, {"images": 2})
    ]
    top = queries.top_accounts(client, PERIOD)
    assert [(r["key"], r["credits"], r["events"]) for r in top] == [
        ("block", 30_000_000, 2),
        ("allow", 27_090_000, 2),
    ]
    subjects = {r["key"]: r["accounts"] for r in queries.credits_by_subject(client, PERIOD)}
    assert subjects == {"design": 2, "research": 1}
    assert rollup_vs_raw(client) == []


def balance_left(client: Any) -> set[tuple[str, str, int]]:
    rows = client.query(
        "SELECT account_id, event_id, sum(sign) AS n FROM usage_event_balance "
        "GROUP BY account_id, event_id HAVING n != 0"
    ).result_rows
    return {(a, e, int(n)) for a, e, n in rows}


def test_engine_story_has_the_entry_shapes_under_test() -> None:
    story = make_story()
    usage_entries = expected_types(story)
    assert ("allow-img2", "USAGE_DEBIT") in usage_entries
    assert ("allow-img2", "OVERAGE") in usage_entries
    amended = [t for c, t in usage_entries if c == "allow-txt"]
    assert amended == ["OVERAGE", "USAGE_DEBIT"]
    assert [t for c, t in usage_entries if c == "block-img2"] == ["USAGE_DEBIT", "USAGE_REJECTED"]
    assert [t for c, t in usage_entries if c == "block-txt"] == ["USAGE_REJECTED"]
    assert not {c for c, _ in usage_entries} & {"allow-bad", "allow-neg", "block-bad", "block-neg"}
    assert [u["event_id"] for u in story.usage].count("allow-img1") == 2


def test_usage_daily_counts_each_accepted_event_once(
    kafka_bootstrap: str, clickhouse_url: str, ch_database: str, topics: TopicNames
) -> None:
    story = make_story()
    produce(kafka_bootstrap, topics, story.usage, story.ledger)
    sink(kafka_bootstrap, clickhouse_url, ch_database, topics, f"sink-{uuid.uuid4().hex[:8]}")
    client = connect(clickhouse_url, ch_database)
    assert client.query("SELECT count() FROM usage_events").result_rows[0][0] == len(story.usage)

    assert usage_daily(client) == EXPECTED
    assert_queries_agree(client)

    # Merged, every record the ledger accepted cancels with its marker; what stays is what the
    # view subtracts. The answer does not change.
    client.command("OPTIMIZE TABLE usage_event_balance FINAL")
    client.command("OPTIMIZE TABLE usage_daily_totals FINAL")
    assert client.query("SELECT count() FROM usage_event_balance").result_rows[0][0] == len(
        LEFT_IN_BALANCE
    )
    assert balance_left(client) == LEFT_IN_BALANCE
    assert usage_daily(client) == EXPECTED
    assert_queries_agree(client)


def test_insert_order_and_batch_boundaries_do_not_matter(
    kafka_bootstrap: str, clickhouse_url: str, ch_database: str, topics: TopicNames
) -> None:
    """The ledger lands first, cut between the entries of one event; the usage records last."""
    story = make_story()
    group = f"sink-{uuid.uuid4().hex[:8]}"
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    for account in ("allow", "block"):
        entries = [e for e in story.ledger if e["account_id"] == account]
        cut = max(i for i, e in enumerate(entries) if e["entry_id"] in story.split_after) + 1
        first += entries[:cut]
        second += entries[cut:]
    # Every event with two usage entries has them in different inserts.
    assert all(e["entry_id"] in story.split_after for e in first if e["cause_id"].endswith("img2"))
    assert {e["type"] for e in second if e["cause_id"].endswith("img2")} == {
        "OVERAGE", "USAGE_REJECTED",
    }  # fmt: skip

    produce(kafka_bootstrap, topics, [], first)
    sink(kafka_bootstrap, clickhouse_url, ch_database, topics, group)
    produce(kafka_bootstrap, topics, [], second)
    sink(kafka_bootstrap, clickhouse_url, ch_database, topics, group)
    client = connect(clickhouse_url, ch_database)
    assert client.query("SELECT count() FROM usage_events").result_rows[0][0] == 0
    # The ledger alone: events, credits and rejections are final; no units or records yet.
    ledger_only: dict[tuple[str, ...], tuple[Any, ...]] = {
        key: (c, o, e, r, 0, {}) for key, (c, o, e, r, _, _) in EXPECTED.items() if c or e or r
    }
    assert usage_daily(client) == ledger_only

    produce(kafka_bootstrap, topics, story.usage, [])
    sink(kafka_bootstrap, clickhouse_url, ch_database, topics, group)
    assert usage_daily(client) == EXPECTED
    assert_queries_agree(client)
    client.command("OPTIMIZE TABLE usage_event_balance FINAL")
    assert balance_left(client) == LEFT_IN_BALANCE
    assert usage_daily(client) == EXPECTED


def _insert(client: Any, story: Story) -> None:
    usage = [usage_row(r, 0, i) for i, r in enumerate(story.usage)]
    ledger = [ledger_row(r, 1, i) for i, r in enumerate(story.ledger)]
    for table, columns, rows in (
        ("usage_events", USAGE_COLUMNS, usage),
        ("ledger_entries", LEDGER_COLUMNS, ledger),
    ):
        client.insert(
            table,
            list(zip(*rows, strict=True)),
            column_names=list(columns),
            column_oriented=True,
        )


def test_migration_0003_backfills_the_history_and_can_run_again(clickhouse_url: str) -> None:
    """History written under 0002 (which counted Kafka records) is recounted by 0003."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    ensure_database(clickhouse_url, database)
    client = connect(clickhouse_url, database)
    applied_versions(client)  # creates schema_migrations
    for migration in load_migrations():
        if migration.version <= 2:
            for statement in migration.statements():
                client.command(statement)
            client.insert(
                "schema_migrations",
                [[migration.version, migration.name, migration.checksum]],
                column_names=["version", "name", "checksum"],
            )
    story = make_story()
    corrections = [
        e for e in story.ledger if e["entry_id"].startswith(("allow-void", "allow-amend"))
    ]
    story.ledger = [e for e in story.ledger if e not in corrections]  # none before 0004
    _insert(client, story)
    old = client.query(
        "SELECT sum(events), sumMap(units) FROM usage_daily "
        "WHERE account_id = 'allow' AND subject = 'design'"
    ).result_rows[0]
    assert old == (3, {"images": 3})  # the 0002 rollup: one per Kafka record

    assert [m.version for m in migrate(clickhouse_url, database)] == [3, 4, 5]
    _insert(client, Story(ledger=corrections))  # the sink, after the migrations
    assert usage_daily(client) == EXPECTED
    assert_queries_agree(client)

    # An interrupted migration is applied again from its first statement: same result.
    for statement in load_migrations()[-1].statements():
        client.command(statement)
    assert usage_daily(client) == EXPECTED
    client.command(f"DROP DATABASE {database}")
