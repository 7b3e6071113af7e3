"""``void_usage`` and ``amend_usage`` through the processor, across restarts that restore from
the changelog.

The charge of each usage event is kept with its id in the id store (``pipeline/id_store.py``),
so a worker that starts on empty local stores and restores from the changelog can still give
it back. A second void is refused, the voided event stays a duplicate, an amend re-sent after a
restart too, and the ledger is the engine's pure fold of the same input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from processor_harness import T0, Worker, decode_ledger, produce, read_topic

from metering.avro import CREDIT_COMMAND, USAGE_EVENT, AvroCodec, load_registry
from metering.domain import conserved_balance, fold
from metering.domain.records import LedgerEntry
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

ACCOUNT = "acct-void"


def test_void_usage_gives_the_charge_back_after_a_restore(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)

    def command(cid: str, at: int, **fields: object) -> tuple[str, str, bytes, int]:
        record = {"command_id": cid, "account_id": ACCOUNT, "issued_at": at, **fields}
        return (topics.credit_commands, ACCOUNT, ccodec.encode(record), at)

    usage = {"event_id": "ev-1", "account_id": ACCOUNT, "feature": "image_generation",
             "units": {"images": 2}, "occurred_at": T0 + 10}  # fmt: skip
    resend = (topics.usage_events, ACCOUNT, ucodec.encode(usage), T0 + 30)

    first = Worker(kafka_bootstrap, topics, "void", tmp_path).start()
    try:
        # One at a time: commands and usage are different topics, read in no set order.
        produce(kafka_bootstrap, [command("plan", T0, kind="assign_plan", plan_id="growth")])
        read_topic(kafka_bootstrap, topics.credit_ledger, 2, settle=0)
        produce(kafka_bootstrap, [resend])
        read_topic(kafka_bootstrap, topics.credit_ledger, 3, settle=0)
    finally:
        first.stop()
    second = Worker(kafka_bootstrap, topics, "void", tmp_path).start()  # empty local stores
    try:
        produce(
            kafka_bootstrap,
            [
                command("void-1", T0 + 20, kind="void_usage", event_id="ev-1", reason="refund"),
                command("void-2", T0 + 21, kind="void_usage", event_id="ev-1"),
            ],
        )
        read_topic(kafka_bootstrap, topics.credit_ledger, 5, settle=0)
        produce(kafka_bootstrap, [resend])  # the voided event, sent again: still a duplicate
        records = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, 5, settle=3))
    finally:
        second.stop()

    ledger = [LedgerEntry.from_record(r) for r in records[ACCOUNT]]
    assert [e.type.value for e in ledger] == [
        "PLAN_ASSIGNED", "GRANT_CREATED", "USAGE_DEBIT", "USAGE_REVERSED", "COMMAND_REJECTED",
    ]  # fmt: skip
    debit, reversed_, rejected = ledger[2], ledger[3], ledger[4]
    assert reversed_.amount == -debit.amount == 50_000_000
    assert [(g, -a) for g, a in reversed_.allocations] == list(debit.allocations)
    assert reversed_.balance_after == ledger[1].balance_after
    assert reversed_.entry_id == "void-1:USAGE_REVERSED:ev-1"
    assert (reversed_.occurred_at, reversed_.feature) == (T0 + 10, "image_generation")
    assert "already_voided" in (rejected.reason or "")
    assert fold(ledger).balance == conserved_balance(ledger) == ledger[1].balance_after


def test_amend_usage_charges_the_new_units_across_restores(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """An amend, a restart on empty stores, a second amend (it reverses the first, found in the
    id store restored from the changelog), then a void of the amended charge."""
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    account = "acct-amend"

    def command(cid: str, at: int, **fields: object) -> tuple[str, str, bytes, int]:
        record = {"command_id": cid, "account_id": account, "issued_at": at, **fields}
        return (topics.credit_commands, account, ccodec.encode(record), at)

    usage = {"event_id": "ev-a", "account_id": account, "feature": "image_generation",
             "units": {"images": 2}, "occurred_at": T0 + 10, "subject": "u1"}  # fmt: skip
    fix_1 = command("fix-1", T0 + 20, kind="amend_usage", event_id="ev-a", units={"images": 5})
    fix_2 = command("fix-2", T0 + 30, kind="amend_usage", event_id="ev-a", units={"images": 1})
    undo = command("undo", T0 + 40, kind="void_usage", event_id="ev-a", reason="refund")
    steps = [  # (record, ledger entries by then); one worker per group, each on empty stores
        [
            (command("plan", T0, kind="assign_plan", plan_id="growth"), 2),
            ((topics.usage_events, account, ucodec.encode(usage), T0 + 10), 3),
            (fix_1, 5),
        ],
        # fix_1 again, after the restart: its command id was kept in the id store (a correction
        # marker), restored from the changelog: a duplicate, nothing written.
        [(fix_1, 5), (fix_2, 7), (undo, 8)],
    ]
    total = 0
    for n, group in enumerate(steps):
        worker = Worker(kafka_bootstrap, topics, "amend", tmp_path / str(n)).start()
        try:
            for record, total in group:  # one at a time: two topics, read in no set order
                produce(kafka_bootstrap, [record])
                read_topic(kafka_bootstrap, topics.credit_ledger, total, settle=0)
        finally:
            worker.stop()
    records = decode_ledger(read_topic(kafka_bootstrap, topics.credit_ledger, total, settle=1))
    ledger = [LedgerEntry.from_record(r) for r in records[account]]
    assert [e.type.value for e in ledger] == [
        "PLAN_ASSIGNED", "GRANT_CREATED", "USAGE_DEBIT",
        "USAGE_REVERSED", "USAGE_DEBIT", "USAGE_REVERSED", "USAGE_DEBIT", "USAGE_REVERSED",
    ]  # fmt: skip
    assert [e.amount for e in ledger[2:]] == [
        -50_000_000, 50_000_000, -125_000_000, 125_000_000, -25_000_000, 25_000_000,
    ]  # fmt: skip
    amended = ledger[6]
    assert (amended.entry_id, amended.cause_id, amended.reason) == (
        "fix-2:USAGE_DEBIT:ev-a",
        "ev-a",
        "amended",
    )
    assert (amended.occurred_at, amended.subject) == (T0 + 10, "u1")
    assert ledger[-1].balance_after == ledger[1].balance_after
    assert fold(ledger).balance == conserved_balance(ledger) == ledger[1].balance_after
