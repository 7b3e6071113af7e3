"""Test data for the ClickHouse sink tests: consistent usage events and ledger entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from metering.avro import LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
from metering.topics import TopicNames

DAY_MS = 86_400_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
SUBJECTS = ("design", "research", "marketing")
FEATURES = ("text_generation", "image_generation")
MODELS = ("m-small", None)


@dataclass
class Dataset:
    """What was produced, so tests can compute expected totals in Python."""

    usage: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def balances(self) -> dict[str, int]:
        last: dict[str, dict[str, Any]] = {}
        for e in self.ledger:
            last[e["account_id"]] = e
        return {a: e["balance_after"] for a, e in last.items()}


def make_dataset(accounts: list[str], events_per_account: int) -> Dataset:
    """Per account: one grant, then one usage event and its USAGE_DEBIT per event."""
    data = Dataset()
    for a_idx, account in enumerate(accounts):
        balance = 1_000 * 1_000_000
        seq = 1
        grant_id = f"grant-{account}"
        created = ledger_entry(account, seq, "GRANT_CREATED", balance, balance, grant_id, T0)
        created["allocations"] = [{"grant_id": grant_id, "amount": balance}]
        created["grant"] = {
            "grant_id": grant_id,
            "source": "purchase",
            "amount": balance,
            "priority": 0,
            "effective_at": T0,
            "expires_at": None,
            "cost_basis_micros": None,
        }
        data.ledger.append(created)  # a sound ledger: reconcile audits it
        for i in range(events_per_account):
            at = T0 + (i % 5) * DAY_MS + i
            subject = SUBJECTS[(i + a_idx) % len(SUBJECTS)]
            feature = FEATURES[i % len(FEATURES)]
            model = MODELS[i % len(MODELS)]
            event_id = f"{account}-ev-{i}"
            cost = 1_000 + 17 * i
            data.usage.append(
                {
                    "event_id": event_id,
                    "account_id": account,
                    "subject": subject,
                    "feature": feature,
                    "model": model,
                    "units": {"input_tokens": 100 + i, "requests": 1},
                    "occurred_at": at,
                    "source": "test",
                    "attributes": {"i": str(i)},
                    "reservation_id": None,
                }
            )
            seq += 1
            balance -= cost
            entry = ledger_entry(account, seq, "USAGE_DEBIT", -cost, balance, event_id, at)
            entry.update(subject=subject, feature=feature, model=model, price_version="v1")
            entry["allocations"] = [{"grant_id": f"grant-{account}", "amount": -cost}]
            data.ledger.append(entry)
    return data


def ledger_entry(
    account: str, seq: int, kind: str, amount: int, balance: int, cause: str, at: int
) -> dict[str, Any]:
    return {
        "entry_id": f"{cause}:{kind}",
        "account_id": account,
        "seq": seq,
        "type": kind,
        "amount": amount,
        "allocations": [],
        "balance_after": balance,
        "overage_after": 0,
        "cause_id": cause,
        "subject": None,
        "feature": None,
        "model": None,
        "price_version": None,
        "occurred_at": at,
        "recorded_at": at + 5,
        "period_start": T0,
        "period_end": T0 + 31 * DAY_MS,
        "reason": None,
        "reservation_id": None,
        "grant": None,
        "terms": None,
    }


def produce(bootstrap: str, topics: TopicNames, data: Dataset, poison: bool = True) -> None:
    """Produce the dataset keyed by account (plus one undecodable record per topic)."""
    registry = load_registry()
    usage, ledger = AvroCodec(registry, USAGE_EVENT), AvroCodec(registry, LEDGER_ENTRY)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for rec in data.usage:
        producer.produce(topics.usage_events, key=rec["account_id"], value=usage.encode(rec))
    for rec in data.ledger:
        producer.produce(topics.credit_ledger, key=rec["account_id"], value=ledger.encode(rec))
    if poison:
        producer.produce(topics.usage_events, key=b"poison", value=b"\x00\x00\x00\x00\x63junk")
        # A registered header with a corrupt body: only a full decode (or ClickHouse) sees it.
        producer.produce(topics.usage_events, key=b"poison", value=usage.header + b"\x07\xff")
        producer.produce(topics.credit_ledger, key=b"poison", value=b"not avro at all")
    assert producer.flush(30) == 0
