"""Idempotency by time, whatever the volume (design invariant 2), on a real broker.

The black-box test found the dedupe window capped at 20,000 ids per account: at 50 events/s that
is about 400 s, and older re-sends were recorded as ``outside_dedupe_window`` and never charged.
Here one busy account gets far more ids than that, with re-sends up to an hour later and late
events up to six hours late: every event must be charged exactly once, and the ledger must
equal the engine's pure fold entry for entry.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
from processor_harness import (
    T0,
    Input,
    Worker,
    decode_ledger,
    normalise,
    produce,
    pure_fold,
    read_topic,
)
from test_processor_crash import _check, _setup

from metering.avro import CREDIT_COMMAND, USAGE_EVENT, AvroCodec, load_registry
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

MINUTE = 60_000
HOUR = 60 * MINUTE


def _busy_account(topics: TopicNames, rate: int, hours: float, seed: int) -> Input:
    """One account, ``rate`` events a second of event time for ``hours``; 5 % re-sent 1 to 60
    minutes of event time later, 1 % arriving up to 6 hours late."""
    rnd = random.Random(seed)
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    acct = "acct-busy"
    events = int(rate * hours * 3600)
    buy = {
        "command_id": "buy-busy",
        "account_id": acct,
        "kind": "purchase",
        "amount": 10 * events * 1_000_000,
        "cost_basis_micros": 10_000,
        "currency": "USD",
        "issued_at": T0 - 7 * HOUR,
    }
    inp = Input(commands=[(topics.credit_commands, acct, ccodec.encode(buy), T0 - 7 * HOUR)])
    arrivals: list[tuple[int, int, bytes]] = []  # (arrival event time, tie-break, value)
    for i in range(events):
        at = T0 + i * 1000 // rate
        record = {
            "event_id": f"busy-{i}",
            "account_id": acct,
            "subject": "research",
            "feature": "text_generation",
            "model": None,
            "units": {"requests": 1},
            "occurred_at": at,
        }
        value = ucodec.encode(record)
        roll = rnd.random()
        if roll < 0.01:
            record["occurred_at"] = at - rnd.randrange(1, 6 * HOUR)  # arrives late
            value = ucodec.encode(record)
        arrivals.append((at, i, value))
        if roll > 0.95:
            arrivals.append((at + rnd.randrange(MINUTE, 60 * MINUTE), i, value))  # re-sent
    arrivals.sort()
    inp.usage = [(topics.usage_events, acct, value, at) for at, _, value in arrivals]
    return inp


@pytest.mark.slow
def test_a_busy_account_is_charged_exactly_once_for_every_event(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """Default: 10 events/s over 2 hours of event time (72,000 events; the old cap of 20,000
    ids covered 33 minutes of it). ``METERING_BUSY_RATE=500`` runs the full 500 events/s."""
    rate = int(os.environ.get("METERING_BUSY_RATE", "10"))
    inp = _busy_account(topics, rate=rate, hours=2, seed=13)
    expected = normalise(pure_fold(inp))
    n_expected = sum(len(v) for v in expected.values())
    worker = Worker(kafka_bootstrap, topics, "busy", tmp_path).start()
    try:
        _setup(kafka_bootstrap, topics, inp)
        produce(kafka_bootstrap, inp.usage)
        ledger = decode_ledger(
            read_topic(kafka_bootstrap, topics.credit_ledger, n_expected, timeout=300, settle=2)
        )
    finally:
        worker.stop()
    _check(ledger, expected)
    entries = ledger["acct-busy"]
    charged = Counter(e["cause_id"] for e in entries if e["type"] == "USAGE_DEBIT")
    events = int(rate * 2 * 3600)
    assert len(charged) == events and set(charged.values()) == {1}
    assert not [e for e in entries if e["type"] == "USAGE_REJECTED"]


def test_every_command_kind_re_sent_a_week_later_changes_nothing(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    """The black-box test re-sent a negative adjustment five days later and a purchase three
    weeks later (after its grant was voided): both were applied again. Here every kind is
    re-sent a week of event time later, with usage in between moving the account's clock."""
    registry = load_registry()
    ucodec, ccodec = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, CREDIT_COMMAND)
    acct = "acct-resend"
    week = 7 * 24 * HOUR
    commands = [
        {"kind": "assign_plan", "plan_id": "growth"},
        {"kind": "purchase", "amount": 50_000_000, "cost_basis_micros": 10_000,
         "currency": "USD", "grant_id": "g-buy"},
        {"kind": "grant", "amount": 5_000_000, "grant_source": "promotion"},
        {"kind": "promotion", "amount": 3_000_000},
        {"kind": "adjustment", "amount": -2_000_000, "reason": "refund"},
        {"kind": "adjustment", "amount": 2_000_000, "reason": "goodwill"},
        {"kind": "void_grant", "grant_id": "g-buy"},
        {"kind": "set_override", "override": {"monthly_credits": 1_234_000_000}},
        {"kind": "configure_auto_topup",
         "auto_topup": {"enabled": True, "threshold": 1_000_000, "amount": 10_000_000}},
        {"kind": "topup_declined"},
    ]  # fmt: skip
    records: list[dict[str, object]] = [
        {"command_id": f"cmd-{i}", "account_id": acct, "issued_at": T0 + i, **fields}
        for i, fields in enumerate(commands)
    ]
    inp = Input(
        commands=[
            (topics.credit_commands, acct, ccodec.encode(r), T0 + i) for i, r in enumerate(records)
        ]
    )
    usage = {
        "event_id": "u-later",
        "account_id": acct,
        "subject": "research",
        "feature": "text_generation",
        "model": None,
        "units": {"requests": 1},
        "occurred_at": T0 + week,
    }
    later = [(topics.usage_events, acct, ucodec.encode(usage), T0 + week)]
    resent = [
        (topics.credit_commands, acct, ccodec.encode({**r, "issued_at": T0 + week + 1}), T0 + week)
        for r in records
    ]
    expected = normalise(pure_fold(inp, [*later, *resent]))
    assert expected == normalise(pure_fold(inp, later)), "the fold itself re-applied a command"
    n_expected = sum(len(v) for v in expected.values())
    worker = Worker(kafka_bootstrap, topics, "resend", tmp_path).start()
    try:
        _setup(kafka_bootstrap, topics, inp)
        produce(kafka_bootstrap, later)
        read_topic(kafka_bootstrap, topics.credit_ledger, n_expected, timeout=60, settle=0.5)
        produce(kafka_bootstrap, resent)
        ledger = decode_ledger(
            read_topic(kafka_bootstrap, topics.credit_ledger, n_expected, timeout=60, settle=3)
        )
    finally:
        worker.stop()
    _check(ledger, expected)
