"""The sink against real Kafka and chDB: exactly-once across a crash, rollups, DLQ, queries."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from chsink_helpers import Dataset, make_dataset, produce
from confluent_kafka import Consumer, TopicPartition
from crashing_sink import CRASH_EXIT_CODE

from consumers import queries
from consumers.clickhouse import close_all, connect
from consumers.sink import ClickHouseSink
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

PERIOD = queries.Period(date(2025, 11, 1), date(2026, 1, 1))


def run_sink_process(
    topics: TopicNames, database: str, group: str, crash: bool
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    command = [sys.executable, "-m", "cli.main", "run", "sink"]
    if crash:  # the same sink, dying right after its first inserts (test-only)
        command = [sys.executable, str(Path(__file__).with_name("crashing_sink.py"))]
    argv = [*command, "--database", database]
    argv += ["--topic-prefix", topics.prefix, "--group", group, "--max-rows", "700"]
    argv += ["--exit-when-caught-up", "--instance-id", f"{group}-1"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def run_sink_here(
    bootstrap: str, url: str, database: str, topics: TopicNames, max_rows: int = 50_000
) -> ClickHouseSink:
    sink = ClickHouseSink(
        bootstrap=bootstrap,
        client=connect(url, database),
        topics=topics,
        group=f"sink-{uuid.uuid4().hex[:8]}",
        max_rows=max_rows,
        max_wait_s=0.2,
    )
    sink.run(exit_when_caught_up=True, max_seconds=90)
    return sink


def dlq_records(bootstrap: str, topic: str) -> list[dict[str, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-{uuid.uuid4().hex}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[dict[str, bytes]] = []
        for msg in consumer.consume(num_messages=100, timeout=5):
            if msg.error() is None:
                out.append(dict(msg.headers() or []))
        return out
    finally:
        consumer.close()


def assert_rollups_match_raw(client: Any) -> None:
    """Every (account, subject, feature, model, day) of the rollup equals the raw aggregate.

    Every usage record of these datasets is sent once and debited once, so counting records
    here counts accepted events (test_clickhouse_accepted_usage covers copies and refusals).
    """
    rollup = client.query(
        "SELECT account_id, subject, feature, model, day, sum(credits), sum(events), "
        "sumMap(units) FROM usage_daily GROUP BY ALL ORDER BY ALL"
    ).result_rows
    raw = client.query(
        """
        SELECT account_id, subject, feature, model, day, sum(c), sum(e), sumMap(u) FROM (
            SELECT account_id, subject, feature, model, toDate(occurred_at) AS day,
                   toInt64(0) AS c, count() AS e, sumMap(units) AS u
            FROM usage_events GROUP BY ALL
            UNION ALL
            SELECT account_id, subject, feature, model, toDate(occurred_at) AS day,
                   toInt64(-sum(amount)) AS c, toUInt64(0) AS e,
                   CAST(map(), 'Map(String, Int64)') AS u
            FROM ledger_entries WHERE type IN ('USAGE_DEBIT', 'OVERAGE') GROUP BY ALL
        ) GROUP BY ALL ORDER BY ALL
        """
    ).result_rows
    assert rollup == raw
    assert len(rollup) > 0


def test_crash_between_insert_and_commit_leaves_no_duplicates(
    kafka_bootstrap: str, clickhouse_url: str, ch_database: str, topics: TopicNames
) -> None:
    data = make_dataset([f"crash-{i}" for i in range(6)], 400)
    produce(kafka_bootstrap, topics, data)
    group = f"sink-{uuid.uuid4().hex[:8]}"

    crashed = run_sink_process(topics, ch_database, group, crash=True)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-3000:]
    client = connect(clickhouse_url, ch_database)
    inserted_before_crash = client.query("SELECT count() FROM usage_events").result_rows[0][0]
    inserted_before_crash += client.query("SELECT count() FROM ledger_entries").result_rows[0][0]
    assert inserted_before_crash > 0  # the crash really came after an insert
    close_all()

    finished = run_sink_process(topics, ch_database, group, crash=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "replaying in-flight batch" in finished.stderr
    assert "decoding in Python" in crashed.stderr + finished.stderr  # corrupt body fallback

    client = connect(clickhouse_url, ch_database)
    usage = client.query("SELECT count(), uniqExact(event_id) FROM usage_events").result_rows[0]
    ledger = client.query("SELECT count(), uniqExact(entry_id) FROM ledger_entries").result_rows[0]
    assert usage == (len(data.usage), len(data.usage))
    assert ledger == (len(data.ledger), len(data.ledger))
    events = client.query("SELECT sum(events) FROM usage_daily").result_rows[0][0]
    assert events == len(data.usage)
    assert_rollups_match_raw(client)

    # One DLQ writer per input: the processor dead-letters usage events, the sink only counts
    # and skips what it cannot decode.
    assert dlq_records(kafka_bootstrap, topics.usage_events_dlq) == []
    assert dlq_records(kafka_bootstrap, topics.credit_ledger_dlq) == []
    logs = crashed.stderr + finished.stderr
    assert "skipped undecodable record" in logs and "UnknownSchemaIdError" in logs
    # Two usage poison records and one ledger one, all read again after the crash (repeated
    # warnings are rate-limited, so the count comes from the closing line).
    assert "3 undecodable skipped" in finished.stderr, finished.stderr[-3000:]


def expected_by_subject(data: Dataset, account: str) -> dict[str, tuple[int, int]]:
    credits: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for e in data.ledger:
        if e["account_id"] == account and e["type"] == "USAGE_DEBIT":
            credits[e["subject"]] -= e["amount"]
    for u in data.usage:
        if u["account_id"] == account:
            events[u["subject"]] += 1
    return {s: (credits[s], events[s]) for s in events}


def test_sink_rollups_and_parameterized_queries(
    kafka_bootstrap: str, clickhouse_url: str, ch_database: str, topics: TopicNames
) -> None:
    tricky = "o'brien\\'); DROP TABLE usage_events; --"
    data = make_dataset(["acme", "globex", tricky], 150)
    produce(kafka_bootstrap, topics, data, poison=False)
    sink = run_sink_here(kafka_bootstrap, clickhouse_url, ch_database, topics, max_rows=200)
    assert sink.stats.rows == len(data.usage) + len(data.ledger)
    client = connect(clickhouse_url, ch_database)
    assert_rollups_match_raw(client)

    for account in ("acme", tricky):
        rows = queries.usage_by(client, account, PERIOD, "subject")
        got = {r["key"]: (r["credits"], r["events"]) for r in rows}
        assert got == expected_by_subject(data, account)
        raw = queries.usage_by(client, account, PERIOD, "subject", raw=True)
        assert raw == rows

    # Injection attempts are plain values: they match nothing and break nothing.
    for attack in ("acme' OR '1'='1", "acme' --", "x'); DROP TABLE usage_daily; --", "' OR 1=1"):
        assert queries.usage_by(client, attack, PERIOD) == []
        assert queries.daily_series(client, "acme", PERIOD, subject=attack) == []
    with pytest.raises(ValueError):
        queries.usage_by(client, "acme", PERIOD, "subject; DROP TABLE x")  # type: ignore[arg-type]
    assert client.query("SELECT count() FROM usage_events").result_rows[0][0] == len(data.usage)

    by_model = {r["key"]: r["events"] for r in queries.usage_by(client, "acme", PERIOD, "model")}
    assert by_model == {"m-small": 75, "": 75}
    daily = queries.daily_series(client, "acme", PERIOD)
    assert sum(r["events"] for r in daily) == 150 and len(daily) == 5
    top = queries.top_accounts(client, PERIOD, limit=2)
    assert len(top) == 2
    totals: defaultdict[str, int] = defaultdict(int)
    for e in data.ledger:
        if e["type"] == "USAGE_DEBIT":
            totals[e["account_id"]] -= e["amount"]
    assert top[0]["credits"] == max(totals.values())
    subjects = queries.credits_by_subject(client, PERIOD)
    assert sum(r["credits"] for r in subjects) == sum(totals.values())
    assert {r["accounts"] for r in subjects} == {3}
