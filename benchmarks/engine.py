"""``metering bench engine``: throughput of the pure credit engine in one process.

Builds a realistic mix (many accounts on different plans, 1-4 grants each, text/image/document/
compute usage with several models), then times ``CreditEngine.apply_usage`` over it. The
baseline is a bare loop that only prices the same events, so the ratio shows what burn-down,
ledger entries, alerts and idempotency cost on top of pricing.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from typing import Any

from metering.domain import (
    MICROS_PER_CREDIT,
    CommandKind,
    CreditCommand,
    CreditEngine,
    UsageEvent,
    load_plans,
    load_price_book,
)
from metering.domain.dedupe import DedupeWindow, id_hash
from metering.domain.periods import parse_instant
from metering.domain.state import AccountState

START = parse_instant("2025-03-03T00:00:00Z")
_MODELS = ["gpt-4o-mini", "claude-3-haiku", "gpt-4o", "claude-3-5-sonnet", "o1", None]
_PLANS = ["free", "starter", "starter", "growth", "growth", "enterprise"]


def usage_event(rng: random.Random, i: int, account: str, at: int) -> UsageEvent:
    """One event of the realistic mix (text, image, document, compute; several models)."""
    roll = rng.random()
    if roll < 0.70:
        feature = "text_generation"
        units = {
            "requests": 1,
            "input_tokens": rng.randint(50, 4000),
            "output_tokens": rng.randint(10, 1500),
        }
        model = rng.choice(_MODELS)
    elif roll < 0.82:
        feature, units, model = "image_generation", {"images": rng.randint(1, 4)}, None
    elif roll < 0.94:
        feature = "document_analysis"
        units = {"pages": rng.randint(1, 30), "input_tokens": rng.randint(100, 20000)}
        model = None
    else:
        feature, units, model = "compute", {"compute_ms": rng.randint(10, 60000)}, None
    return UsageEvent(
        event_id=f"evt-{i:09d}",
        account_id=account,
        feature=feature,
        units=units,
        occurred_at=at,
        subject=rng.choice(("design", "research", "marketing", "default")),
        model=model,
    )


def setup_accounts(
    engine: CreditEngine,
    rng: random.Random,
    accounts: int,
    entries: list[Any] | None = None,
) -> dict[str, AccountState]:
    """Accounts on assorted plans with 1-4 grants (plan + purchases/promotions); their ledger
    entries are appended to ``entries`` when given."""
    states: dict[str, AccountState] = {}
    keep = entries.extend if entries is not None else lambda _: None
    for n in range(accounts):
        account = f"acct-{n:06d}"
        state = engine.new_state(account)
        at = START + n
        plan = rng.choice(_PLANS)
        keep(
            engine.apply_command(
                state,
                CreditCommand(
                    f"{account}-plan", account, CommandKind.ASSIGN_PLAN, at, plan_id=plan
                ),
                at,
            ).entries
        )
        for k in range(rng.randint(0, 3)):
            kind = CommandKind.PROMOTION if k % 2 else CommandKind.PURCHASE
            if kind is CommandKind.PURCHASE and plan == "free":
                kind = CommandKind.PROMOTION
            expires = START + rng.randint(20, 200) * 86_400_000 if rng.random() < 0.6 else None
            out = engine.apply_command(
                state,
                CreditCommand(
                    f"{account}-g{k}",
                    account,
                    kind,
                    at,
                    amount=rng.randint(50, 5000) * MICROS_PER_CREDIT,
                    expires_at=expires,
                    cost_basis_micros=10_000 if kind is CommandKind.PURCHASE else None,
                ),
                at,
            )
            keep(out.entries)
        states[account] = state
    return states


def _dedupe_bytes(ids: int) -> tuple[float, float]:
    """(in-memory, serialized) bytes per remembered id for a window holding ``ids`` ids."""
    window = DedupeWindow(window_ms=10**12, max_ids=None)
    for i in range(ids):
        window.add(id_hash(f"evt-{i:012d}"), START + i)
    return window.memory_bytes() / len(window), len(window.to_bytes()) / len(window)


def id_store_bytes(ids: int, accounts: int = 100, batch: int = 20) -> tuple[float, float]:
    """(on disk, in the changelog) bytes per id of the processor's event-id store
    (``pipeline.id_store``): ``ids`` ids over ``accounts`` accounts, ``batch`` ids per account
    and batch, RocksDB flushed and compacted as it settles."""
    import tempfile
    from pathlib import Path

    from rocksdict import Options, Rdict

    from pipeline.id_store import IdStore, write_chunks

    with tempfile.TemporaryDirectory() as tmp:
        db = Rdict(tmp, options=Options(raw_mode=True))
        store = IdStore(lambda partition: db)
        changelog = 0
        for start in range(0, ids, batch * accounts):
            for n in range(start, min(ids, start + batch * accounts)):
                store.view(0, f"acct-{n % accounts:06d}").remember(f"evt-{n:012d}", START + n)
            records = store.flush(0)
            changelog += sum(len(k) + len(v or b"") for k, v in records)
            write_chunks(db, records)
        db.flush()
        db.compact_range(None, None)
        disk = sum(f.stat().st_size for f in Path(tmp).glob("*.sst"))
        db.close()
    return disk / ids, changelog / ids


def run(events: int, accounts: int, seed: int) -> dict[str, Any]:
    engine = CreditEngine(load_price_book(), load_plans())
    rng = random.Random(seed)
    states = setup_accounts(engine, rng, accounts)
    names = list(states)
    # Time advances about 1 ms per event across one week of the month.
    stream = [
        usage_event(rng, i, names[rng.randrange(accounts)], START + 86_400_000 + i * 7)
        for i in range(events)
    ]
    grants = [len(s.grants) for s in states.values()]

    price_book = load_price_book()
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for ev in stream:
            price_book.price(ev.feature, ev.model, ev.units, ev.occurred_at)
        baseline_s = time.perf_counter() - t0

        apply = engine.apply_usage
        entries = alerts = 0
        t0 = time.perf_counter()
        for ev in stream:
            out = apply(states[ev.account_id], ev, ev.occurred_at)
            entries += len(out.entries)
            alerts += len(out.alerts)
        engine_s = time.perf_counter() - t0

        # Redelivery of the whole stream: every event must be recognised as a duplicate.
        t0 = time.perf_counter()
        dupes = sum(apply(states[ev.account_id], ev, 0).duplicate for ev in stream)
        dedupe_s = time.perf_counter() - t0
    finally:
        gc.enable()
    if dupes != events:
        raise SystemExit(f"dedupe failed: {dupes} of {events} redeliveries recognised")

    t0 = time.perf_counter()
    blobs = [s.to_bytes() for s in states.values()]
    for blob in blobs:
        AccountState.from_bytes(blob)
    roundtrip_us = (time.perf_counter() - t0) / accounts * 1e6
    mem_per_id, wire_per_id = _dedupe_bytes(100_000)
    disk_per_id, changelog_per_id = id_store_bytes(200_000)

    events_per_s = events / engine_s
    baseline_per_s = events / baseline_s
    return {
        "events_per_s": round(events_per_s),
        "baseline_price_only_per_s": round(baseline_per_s),
        "ratio_vs_baseline": round(events_per_s / baseline_per_s, 3),
        "duplicates_per_s": round(events / dedupe_s),
        "bytes_per_event_id_memory": round(mem_per_id, 1),
        "bytes_per_event_id_memory_target": 64,
        "bytes_per_event_id_serialized": round(wire_per_id, 1),
        "bytes_per_event_id_disk": round(disk_per_id, 1),
        "bytes_per_event_id_disk_target": 48,
        "bytes_per_event_id_changelog": round(changelog_per_id, 1),
        "state_roundtrip_us": round(roundtrip_us, 1),
        "state_bytes_avg": round(sum(map(len, blobs)) / accounts),
        "events": events,
        "accounts": accounts,
        "grants_per_account_avg": round(sum(grants) / accounts, 2),
        "ledger_entries": entries,
        "alerts": alerts,
        "python": sys.version.split()[0],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metering bench engine",
        description="Throughput of the pure credit engine in one process (no Kafka, no Redis) "
        "over a realistic mix of accounts, plans, grants and usage, next to a loop that only "
        "prices the same events. The last line of output is JSON.",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument(
        "--events", type=int, default=300_000, metavar="N", help="usage events (default: 300000)"
    )
    parser.add_argument(
        "--accounts", type=int, default=10_000, metavar="N", help="accounts (default: 10000)"
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="random seed of the generated mix (default: 7)"
    )
    args = parser.parse_args(argv)
    result = run(args.events, args.accounts, args.seed)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>32}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
