"""The sweep timer on a real broker: an idle account's grant expires on time, without usage."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from processor_harness import Worker, decode_ledger, produce, read_topic

from metering.avro import CREDIT_COMMAND, AvroCodec, load_registry
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

PROMO = 7_000_000
"""micro-credits of the promotional grant that expires"""


def test_the_sweep_expires_an_idle_accounts_grant_on_time(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    codec = AvroCodec(load_registry(), CREDIT_COMMAND)
    now = int(time.time() * 1000)
    expires_at = now + 4_000
    commands = [
        {
            "command_id": "sweep-plan",
            "account_id": "acct-idle",
            "kind": "assign_plan",
            "plan_id": "starter",
            "issued_at": now,
        },
        {
            "command_id": "sweep-promo",
            "account_id": "acct-idle",
            "kind": "promotion",
            "amount": PROMO,
            "grant_id": "promo-1",
            "expires_at": expires_at,
            "issued_at": now + 1,
        },
    ]
    worker = Worker(kafka_bootstrap, topics, "sweep", tmp_path, "--sweep-interval", "0.5")
    worker.start()
    try:
        produce(
            kafka_bootstrap,
            [
                (topics.credit_commands, c["account_id"], codec.encode(c), int(c["issued_at"]))
                for c in commands
            ],
        )
        deadline = time.monotonic() + 60
        expired: list[dict[str, object]] = []
        while not expired:
            assert time.monotonic() < deadline, "the sweep never expired the promotional grant"
            ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, 1 << 30, 2))
            expired = [
                e
                for e in ledger.get("acct-idle", [])
                if e["type"] == "GRANT_EXPIRED" and e["amount"] == -PROMO
            ]
        seen_at = int(time.time() * 1000)
    finally:
        worker.stop()
    (entry,) = expired
    # Not before the grant's expiry, and soon after it (sweep interval + commit + read).
    assert expires_at <= int(str(entry["occurred_at"])) <= seen_at
    assert seen_at - expires_at < 30_000
