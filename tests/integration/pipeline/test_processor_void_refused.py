"""Until the processor keeps charges (docs/corrections.md), ``void_usage`` is refused loudly.

The command schema (v2) can carry it, so a producer may send one. The processor must not
pretend: the command goes to ``credit-commands.dlq`` with a reason that says corrections are
not kept yet, and the ledger is untouched (no COMMAND_REJECTED that reads like "no such event").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from processor_harness import T0, Worker, decode_ledger, produce, read_topic

from metering.avro import CREDIT_COMMAND, USAGE_EVENT, AvroCodec, load_registry
from metering.dlq import header_map
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

ACCOUNT = "acct-void"


def test_void_usage_is_dead_lettered_with_its_reason(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    plan = {"command_id": "plan-v", "account_id": ACCOUNT, "kind": "assign_plan",
            "plan_id": "growth", "issued_at": T0}  # fmt: skip
    usage = {"event_id": "ev-1", "account_id": ACCOUNT, "feature": "text_generation",
             "units": {"requests": 1}, "occurred_at": T0 + 10}  # fmt: skip
    void = {"command_id": "void-1", "account_id": ACCOUNT, "kind": "void_usage",
            "event_id": "ev-1", "reason": "model call failed", "issued_at": T0 + 20}  # fmt: skip
    worker = Worker(kafka_bootstrap, topics, "void-refused", tmp_path).start()
    try:
        produce(
            kafka_bootstrap,
            [
                (topics.credit_commands, ACCOUNT, ccodec.encode(plan), T0),
                (topics.usage_events, ACCOUNT, ucodec.encode(usage), T0 + 10),
                (topics.credit_commands, ACCOUNT, ccodec.encode(void), T0 + 20),
            ],
        )
        dlq = read_topic(kafka_bootstrap, topics.credit_commands_dlq, 1, timeout=60)
        ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, 3, settle=2))
    finally:
        worker.stop()

    assert [e["type"] for e in ledger[ACCOUNT]] == ["PLAN_ASSIGNED", "GRANT_CREATED", "USAGE_DEBIT"]
    assert len(dlq) == 1 and dlq[0].key() == ACCOUNT.encode()
    headers = header_map(dlq[0].headers())
    assert headers["error.class"] == "ValidationError"
    assert "void_usage" in headers["error.message"] and "charge" in headers["error.message"]
