"""``metering reconcile`` against real Kafka, chDB and Redis: clean passes, corruption fails."""

from __future__ import annotations

import uuid

import pytest
import redis
from chsink_helpers import make_dataset, produce

from consumers.clickhouse import connect
from consumers.reconcile import main, read_ledger_topic, reconcile, redis_balances
from consumers.sink import ClickHouseSink
from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.topics import TopicNames
from projections.keys import account_keys, prefix_from_env

pytestmark = pytest.mark.integration


def test_reconcile_clean_then_corrupted(
    kafka_bootstrap: str,
    clickhouse_url: str,
    redis_url: str,
    ch_database: str,
    topics: TopicNames,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_dataset(["r-acme", "r-globex", "r-initech"], 60)
    produce(kafka_bootstrap, topics, data, poison=False)
    ClickHouseSink(
        bootstrap=kafka_bootstrap,
        client=connect(clickhouse_url, ch_database),
        topics=topics,
        group=f"sink-{uuid.uuid4().hex[:8]}",
        max_wait_s=0.2,
    ).run(exit_when_caught_up=True, max_seconds=90)
    # What the Redis projection holds after applying this ledger.
    conn = redis.Redis.from_url(redis_url)
    prefix = prefix_from_env()
    for account, balance in data.balances().items():
        conn.hset(account_keys(prefix, account).balance, "available", balance)

    argv = ["--database", ch_database, "--topic-prefix", topics.prefix]
    assert main(argv) == 0, capsys.readouterr().out
    assert "3 accounts, 0 mismatched" in capsys.readouterr().out

    client = connect(clickhouse_url, ch_database)
    # A duplicated ledger row (as a non-idempotent sink would write) for one account.
    client.command(
        "INSERT INTO ledger_entries SELECT * FROM ledger_entries "
        "WHERE account_id = 'r-globex' AND seq = 3"
    )
    assert main([*argv, "--settle", "0"]) == 1
    out = capsys.readouterr().out
    assert "1 mismatched: r-globex" in out
    assert "clickhouse entries" in out

    # Redis drifting from the ledger is caught too.
    conn.hset(account_keys(prefix, "r-initech").balance, "available", 1)
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    report = reconcile(
        client,
        read_ledger_topic(kafka_bootstrap, topics.credit_ledger, codec.decode),
        redis_balances(redis_url),
    )
    assert {m.account for m in report.mismatches} == {"r-globex", "r-initech"}
    assert any(m.check == "redis available" for m in report.mismatches)
