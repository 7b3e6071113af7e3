"""Voids and amends end to end: the processor, the Redis projection and the ClickHouse sink on
real Kafka, Redis and chDB, then ``metering reconcile`` over all of them.

One account's story crosses the two places where a correction cannot simply give credits back
to the grant they came from: a promotion that expired after it paid for usage, and a period
reset that replaced the plan grant. Both come back as correction grants. The ledger must be
the engine's pure fold of the same input, entry for entry; the live projection must equal one
rebuilt from the ledger; ``usage_daily`` must net every correction into the event's own day and
the account page list them in that period; and reconcile must find nothing.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from processor_harness import (
    Input,
    Worker,
    decode_ledger,
    normalise,
    produce,
    pure_fold,
    read_topic,
)

from accountpage.usage import usage_report
from consumers.clickhouse import close_all, connect
from consumers.migrations import migrate
from consumers.reconcile import main as reconcile_main
from consumers.sink import ClickHouseSink
from metering.avro import CREDIT_COMMAND, LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
from metering.domain import MICROS_PER_CREDIT
from metering.domain.periods import parse_instant
from metering.topics import TopicNames
from projections.consumer import ProjectionConsumer
from projections.enforcement import Enforcer
from projections.keys import prefix_from_env
from projections.rebuild import compare, rebuild

pytestmark = pytest.mark.integration

CREDIT = MICROS_PER_CREDIT
DAY = 86_400_000
T0 = parse_instant("2025-11-20T00:00:00Z")
NOV_1 = parse_instant("2025-11-01T00:00:00Z")
DEC_1 = parse_instant("2025-12-01T00:00:00Z")
DEC_2 = parse_instant("2025-12-02T00:00:00Z")
JAN_1 = parse_instant("2026-01-01T00:00:00Z")
ACCOUNT = "acct-fix"


def story(topics: TopicNames) -> list[tuple[str, str, bytes, int]]:
    """The input, in the order it is sent (one record at a time)."""
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)

    def command(cid: str, at: int, kind: str, **fields: Any) -> tuple[str, str, bytes, int]:
        record = {"command_id": cid, "account_id": ACCOUNT, "issued_at": at, "kind": kind}
        return (topics.credit_commands, ACCOUNT, ccodec.encode({**record, **fields}), at)

    def usage(event_id: str, at: int, feature: str, **units: int) -> tuple[str, str, bytes, int]:
        record = {"event_id": event_id, "account_id": ACCOUNT, "feature": feature,
                  "units": units, "occurred_at": at, "subject": f"user-{event_id[-1]}"}  # fmt: skip
        return (topics.usage_events, ACCOUNT, ucodec.encode(record), at)

    return [
        command("plan", T0, "assign_plan", plan_id="growth"),
        command("promo", T0 + 1, "promotion", amount=50 * CREDIT, expires_at=T0 + 2 * DAY),
        usage("e1", T0 + 10, "image_generation", images=1),  # the promotion pays
        usage("e2", T0 + 20, "image_generation", images=1),  # the promotion pays
        usage("e3", T0 + 30, "text_generation", requests=3),  # the plan grant pays
        usage("e4", T0 + 3 * DAY, "text_generation", requests=2),  # the promotion expired
        command("void-e1", T0 + 3 * DAY + 1, "void_usage", event_id="e1", reason="refund"),
        command("fix-e2", T0 + 3 * DAY + 2, "amend_usage", event_id="e2", units={"images": 3}),
        usage("e5", DEC_2, "text_generation", requests=1),  # a new period
        command("void-e3", DEC_2 + 1, "void_usage", event_id="e3", reason="model failed"),
        command("fix-e4", DEC_2 + 2, "amend_usage", event_id="e4", units={"requests": 1}),
        usage("e1", T0 + 10, "image_generation", images=1),  # re-sent: still a duplicate
        command("fix-e1", DEC_2 + 3, "amend_usage", event_id="e1", units={"images": 1}),
    ]


def test_voids_and_amends_across_an_expiry_and_a_reset_reach_every_store(
    kafka_bootstrap: str,
    clickhouse_url: str,
    redis_url: str,
    topics: TopicNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = story(topics)
    expected = normalise(pure_fold(Input(commands=records)))[ACCOUNT]
    worker = Worker(kafka_bootstrap, topics, "fix", tmp_path).start()
    try:
        sent: list[tuple[str, str, bytes, int]] = []
        for record in records:  # one at a time: commands and usage are different topics
            sent.append(record)
            count = len(pure_fold(Input(commands=sent)).get(ACCOUNT, []))
            produce(kafka_bootstrap, [record])
            read_topic(kafka_bootstrap, topics.credit_ledger, count, settle=0)
        ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, len(expected)))
    finally:
        worker.stop()
    assert ledger[ACCOUNT] == expected

    corrections = {e["grant"]["grant_id"] for e in expected if e["type"] == "USAGE_REVERSED"
                   and e["grant"] is not None}  # fmt: skip
    # e1 and e2 were paid by the promotion, expired since; e3 and e4 by November's plan grant,
    # replaced at the reset: all four come back as correction grants.
    assert corrections == {"correction:e1", "correction:e2", "correction:e3", "correction:e4"}
    rejected = [e for e in expected if e["type"] == "COMMAND_REJECTED"]
    assert len(rejected) == 1 and "already_voided" in rejected[0]["reason"]  # fix-e1
    last = expected[-1]

    # Redis: the live projection, then one rebuilt from the ledger alone.
    client = redis.Redis.from_url(redis_url)
    prefix = prefix_from_env()
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    projection = ProjectionConsumer(
        bootstrap=kafka_bootstrap,
        topics=topics,
        client=client,
        prefix=prefix,
        decode=codec.decode,
        group_id=f"proj-{uuid.uuid4().hex[:8]}",
        poll_timeout_s=0.2,
    )
    try:
        for _ in range(300):
            if projection.metrics.entries_applied >= len(expected):
                break
            projection.poll_once()
        assert projection.metrics.entries_applied == len(expected)
    finally:
        projection.close()
    balance = Enforcer(client, prefix).balance(ACCOUNT)
    assert balance is not None
    assert (balance.available, balance.overage_used) == (
        last["balance_after"],
        last["overage_after"],
    )
    rebuilt = f"{prefix}rebuilt-{uuid.uuid4().hex[:6]}:"
    rebuild(bootstrap=kafka_bootstrap, topics=topics, client=client, prefix=rebuilt,
            decode=codec.decode, timeout_s=60)  # fmt: skip
    assert compare(client, prefix, rebuilt, ACCOUNT) == []

    # ClickHouse: both entries of every correction kept, netted into the event's own day.
    database = f"t_{uuid.uuid4().hex[:10]}"
    migrate(clickhouse_url, database)
    close_all()
    ClickHouseSink(
        bootstrap=kafka_bootstrap,
        client=connect(clickhouse_url, database),
        topics=topics,
        group=f"sink-{uuid.uuid4().hex[:8]}",
        max_wait_s=0.2,
    ).run(exit_when_caught_up=True, max_seconds=90)
    ch = connect(clickhouse_url, database)
    rows = ch.query(
        "SELECT subject, toString(day), credits, events FROM usage_daily "
        "WHERE account_id = {a:String} ORDER BY subject",
        parameters={"a": ACCOUNT},
    ).result_rows
    spent = {
        "user-1": 0,  # voided
        "user-2": 75 * CREDIT,  # amended to 3 images
        "user-3": 0,  # voided after the reset
        "user-4": 1 * CREDIT,  # amended to 1 request after the reset
        "user-5": 1 * CREDIT,
    }
    assert {r[0]: (r[2], r[3]) for r in rows} == {
        s: (credits, 0 if credits == 0 else 1) for s, credits in spent.items()
    }
    # The account page lists them in the period they apply to (the events' own: November).
    report = usage_report(ch, ACCOUNT, NOV_1, DEC_1, now_ms=DEC_2 + 10)
    listed = {(c["event_id"], c["kind"], c["credits_charged"]) for c in report.corrections}
    assert listed == {
        ("e1", "void", 0),
        ("e2", "amend", 75 * CREDIT),
        ("e3", "void", 0),
        ("e4", "amend", 1 * CREDIT),
    }
    assert usage_report(ch, ACCOUNT, DEC_1, JAN_1, now_ms=DEC_2 + 10).corrections == []
    close_all()

    code = reconcile_main(["--database", database, "--topic-prefix", topics.prefix])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 accounts, 0 mismatched" in out
