"""A usage event for a feature the price book does not know, on a real broker.

The issue: on a plan that allows every feature, enforcement let ``teleport`` through and the
event was dead-lettered and never charged, silently. Now the processor dead-letters it *and*
publishes an ``UNKNOWN_FEATURE`` credit alert in the same transaction; the ledger has nothing
for it; a re-sent copy is dead-lettered again but not alerted again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from processor_harness import T0, Worker, decode_ledger, produce, read_topic

from metering.avro import CREDIT_ALERT, CREDIT_COMMAND, USAGE_EVENT, AvroCodec, load_registry
from metering.dlq import header_map
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

ACCOUNT = "acct-uf"


def test_unknown_feature_goes_to_the_dlq_with_an_alert_and_no_ledger_entry(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    alert_codec = AvroCodec(registry, CREDIT_ALERT)

    def usage(event_id: str, feature: str, at: int) -> tuple[str, str, bytes, int]:
        record = {
            "event_id": event_id,
            "account_id": ACCOUNT,
            "feature": feature,
            "units": {"requests": 1},
            "occurred_at": at,
        }
        return (topics.usage_events, ACCOUNT, ucodec.encode(record), at)

    plan = {  # growth: no feature list, so the plan allows every feature
        "command_id": "plan-uf",
        "account_id": ACCOUNT,
        "kind": "assign_plan",
        "plan_id": "growth",
        "issued_at": T0,
    }
    bad = usage("tp-1", "teleport", T0 + 20)
    worker = Worker(kafka_bootstrap, topics, "unknown-feature", tmp_path).start()
    try:
        produce(kafka_bootstrap, [(topics.credit_commands, ACCOUNT, ccodec.encode(plan), T0)])
        setup = read_topic(kafka_bootstrap, topics.credit_ledger, 2, settle=0)
        assert len(setup) == 2  # PLAN_ASSIGNED, GRANT_CREATED
        produce(
            kafka_bootstrap,
            [
                usage("ok-1", "text_generation", T0 + 10),
                bad,
                bad,  # a producer retry / replay: the same bytes again
                usage("ok-2", "text_generation", T0 + 30),
            ],
        )
        ledger = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, 4))[ACCOUNT]
        dlq = read_topic(kafka_bootstrap, topics.usage_events_dlq, 2, timeout=30)
        alert_msgs = read_topic(kafka_bootstrap, topics.credit_alerts, 1, timeout=30, settle=3)
    finally:
        worker.stop()

    # The ledger: the plan, its grant and the two good events; nothing for tp-1.
    assert [(e["type"], e["cause_id"]) for e in ledger] == [
        ("PLAN_ASSIGNED", "plan-uf"),
        ("GRANT_CREATED", "plan-uf"),
        ("USAGE_DEBIT", "ok-1"),
        ("USAGE_DEBIT", "ok-2"),
    ]
    assert [e["seq"] for e in ledger] == [1, 2, 3, 4]

    # Both copies dead-lettered, with the reason.
    assert len(dlq) == 2
    for letter in dlq:
        headers = header_map(letter.headers())
        assert letter.value() == bad[2] and letter.key() == ACCOUNT.encode()
        assert headers["error.class"] == "UnknownFeatureError"
        assert "'teleport'" in headers["error.message"]
        assert headers["source.topic"] == topics.usage_events

    # One alert (the copy is not alerted again), on the DLQ record's partition.
    alerts = [(m.partition(), alert_codec.decode(m.value())) for m in alert_msgs]
    unknown = [(p, a) for p, a in alerts if a["kind"] == "UNKNOWN_FEATURE"]
    assert len(unknown) == 1, alerts
    partition, alert = unknown[0]
    assert partition == dlq[0].partition() == dlq[1].partition()
    assert alert["alert_id"] == f"{ACCOUNT}/unknown_feature/tp-1"
    assert (alert["account_id"], alert["cause_id"], alert["occurred_at"]) == (
        ACCOUNT,
        "tp-1",
        T0 + 20,
    )
    assert "'teleport'" in alert["message"] and "tp-1" in alert["message"]
    assert alert["balance"] == ledger[2]["balance_after"]  # the state when tp-1 came in
    assert alert["period_start"] == ledger[2]["period_start"]
