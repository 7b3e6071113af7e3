"""``metering backfill`` end to end: a file with duplicates and out-of-window events, loaded
twice through real Kafka and the processor. The first run charges each event once; the second
charges nothing; what the file refused never reaches the ledger."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from processor_harness import Input, Worker, debits, decode_ledger, produce, pure_fold, read_topic

from metering.avro import CREDIT_COMMAND, USAGE_EVENT, AvroCodec, load_registry
from metering.backfill.cli import main as backfill
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

DAY = 86_400_000
ACCOUNTS = ("bf-a", "bf-b", "bf-c")


def _file(path: Path, now: int) -> list[dict[str, object]]:
    """300 events of the last week (20 of them twice), 10 older than the window, 1 bad line."""
    events = [
        {
            "event_id": f"bf-{n}",
            "account_id": ACCOUNTS[n % 3],
            "feature": "text_generation",
            "units": {"requests": 1 + n % 4},
            "occurred_at": now - 6 * DAY + n * 60_000,
            "subject": f"user-{n % 5}",
        }
        for n in range(300)
    ]
    old = [
        dict(e, event_id=f"old-{i}", occurred_at=now - 40 * DAY) for i, e in enumerate(events[:10])
    ]
    lines = [json.dumps(e) for e in events + events[:20] + old] + ["{not json"]
    path.write_text("\n".join(lines) + "\n")
    return events


def test_a_backfill_run_twice_charges_each_event_once(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time() * 1000)
    path = tmp_path / "usage.jsonl"
    events = _file(path, now)
    registry = load_registry()
    ccodec, ucodec = AvroCodec(registry, CREDIT_COMMAND), AvroCodec(registry, USAGE_EVENT)
    plans = [
        (topics.credit_commands, a, ccodec.encode({"command_id": f"plan-{a}", "account_id": a,
         "kind": "assign_plan", "plan_id": "growth", "issued_at": now - 7 * DAY}), now)
        for a in ACCOUNTS
    ]  # fmt: skip
    usage = [(topics.usage_events, e["account_id"], ucodec.encode(e), now) for e in events]
    expected = pure_fold(Input(commands=plans, usage=usage))
    total = sum(len(v) for v in expected.values())

    worker = Worker(kafka_bootstrap, topics, "backfill", tmp_path).start()
    try:
        produce(kafka_bootstrap, plans)
        read_topic(kafka_bootstrap, topics.credit_ledger, 2 * len(ACCOUNTS), settle=0)

        assert backfill([str(path), "--dry-run", "--json", "--topic-prefix", topics.prefix]) == 1
        dry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (dry["records"], dry["to_send"], dry["duplicates_in_file"]) == (331, 300, 20)
        assert dry["refused"] == {"outside_window": 10, "unreadable": 1}
        listed = sum(t["micros"] for t in dry["totals"])
        assert listed == -sum(debits(expected).values())  # growth's credits cover it all
        refusals = Path(dry["refusals_file"]).read_text().splitlines()
        assert len(refusals) == 11 and json.loads(refusals[-1])["position"] == 331

        for run in (1, 2):
            code = backfill(
                [str(path), "--json", "--rate", "5000", "--topic-prefix", topics.prefix]
            )
            summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert code == 1 and summary["sent"] == 300 and summary["not_delivered"] == 0, run
            ledger = decode_ledger(
                read_topic(kafka_bootstrap, topics.credit_ledger, total, settle=3)
            )
            assert sum(len(v) for v in ledger.values()) == total, run  # the 2nd run: nothing new
            assert debits(ledger) == debits(expected)
    finally:
        worker.stop()
