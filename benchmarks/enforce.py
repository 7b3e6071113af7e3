"""``metering bench enforce --json``: enforcement latency, sidecar latency, apply throughput.

Each figure is measured next to a baseline in the same run:
- library ``check`` vs a raw redis-py GET (interleaved call by call, same connection);
- the sidecar at a fixed request rate (open loop: latency counts from the scheduled send
  time, so a stalled server cannot hide its queueing) vs the library check;
- the projection's pipelined apply vs a raw pipelined HSET of the same entries;
- the sidecar's resident memory after 100,000 checks of random (unknown, 200-byte) account
  ids vs its memory before them: per-account caches must stay bounded.
Uses ``METERING_REDIS_URL`` (or the local stack's) when reachable, else its own redis-server.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, TypeVar

from benchmarks.sidecar_load import (
    check_bodies,
    run_loop,
    running_sidecar,
    sidecar_load,
)
from devstack.redis import LocalRedis, reachable
from metering.config import env_value
from projections.apply import Projector
from projections.enforcement import Enforcer
from projections.redis_connect import SyncRedis, connect

T = TypeVar("T")

CREDIT = 1_000_000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


def _entry(
    account: str, seq: int, kind: str, amount: int, balance: int, **extra: Any
) -> dict[str, Any]:
    now = 1_700_000_000_000 + seq * 1000
    entry: dict[str, Any] = {
        "account_id": account,
        "seq": seq,
        "type": kind,
        "amount": amount,
        "allocations": [],
        "balance_after": balance,
        "overage_after": 0,
        "recorded_at": now,
        "occurred_at": now,
        "period_start": 1_700_000_000_000,
        "period_end": 1_702_592_000_000,
        "reservation_id": None,
        "grant": None,
        "terms": None,
    }
    entry.update(extra)
    return entry


def seed_entries(account: str, credits: int, policy: str = "block") -> list[dict[str, Any]]:
    """The two ledger entries that give ``account`` a plan (``policy``) and ``credits``."""
    terms = {
        "plan_id": "pro",
        "overage_policy": policy,
        "overage_limit": 0,
        "features": ["text_generation", "image_generation"],
        "monthly_credits": credits,
    }
    grant = {
        "grant_id": "plan-1",
        "source": "plan",
        "amount": credits,
        "priority": 10,
        "effective_at": 1_700_000_000_000,
        "expires_at": 1_702_592_000_000,
    }
    return [
        _entry(account, 1, "PLAN_ASSIGNED", 0, 0, terms=terms),
        _entry(
            account,
            2,
            "GRANT_CREATED",
            credits,
            credits,
            grant=grant,
            allocations=[{"grant_id": "plan-1", "amount": credits}],
        ),
    ]


def _usage_stream(accounts: list[str], total: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Debits spread over accounts at random, seq and balances coherent per account."""
    rng = random.Random(seed)
    seq = dict.fromkeys(accounts, 2)
    balance = dict.fromkeys(accounts, 10**12)
    for _ in range(total):
        account = accounts[rng.randrange(len(accounts))]
        cost = rng.randrange(1_000, 50_000)
        seq[account] += 1
        balance[account] -= cost
        yield _entry(
            account,
            seq[account],
            "USAGE_DEBIT",
            -cost,
            balance[account],
            allocations=[{"grant_id": "plan-1", "amount": -cost}],
        )


def bench_check(client: SyncRedis, prefix: str, accounts: list[str], n: int) -> dict[str, float]:
    enforcer = Enforcer(client, prefix)
    client.set(f"{prefix}raw-get-key", "x" * 16)
    raw_key = f"{prefix}raw-get-key"
    check_lat: list[float] = []
    raw_lat: list[float] = []
    clock = time.perf_counter
    for i in range(n + 1000):
        account = accounts[i % len(accounts)]
        t0 = clock()
        client.get(raw_key)
        t1 = clock()
        enforcer.check(account, "text_generation", 25_000)
        t2 = clock()
        if i >= 1000:  # warm-up: connection, script cache
            raw_lat.append(t1 - t0)
            check_lat.append(t2 - t1)
    started = clock()
    for i in range(n):
        enforcer.check(accounts[i % len(accounts)], "text_generation", 25_000)
    elapsed = clock() - started
    client.delete(raw_key)
    check_p99, raw_p99 = _pct(check_lat, 0.99), _pct(raw_lat, 0.99)
    return {
        "check_p50_ms": _ms(statistics.median(check_lat)),
        "check_p99_ms": _ms(check_p99),
        "checks_per_s": round(n / elapsed),
        "raw_get_p50_ms": _ms(statistics.median(raw_lat)),
        "raw_get_p99_ms": _ms(raw_p99),
        "check_vs_raw_p99": round(check_p99 / raw_p99, 3),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux ``/proc``), in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bench_sidecar(
    redis_url: str, prefix: str, accounts: list[str], rate: float, duration: float
) -> dict[str, float]:
    bodies = check_bodies(accounts)
    with running_sidecar(redis_url, prefix) as (_, port):
        run_loop(sidecar_load(port, bodies, rate, 1.0))  # warm-up
        answers = run_loop(sidecar_load(port, bodies, rate, duration))
    latencies = [a.latency for a in answers]
    return {
        "sidecar_rate_rps": rate,
        "sidecar_requests": len(answers),
        "sidecar_errors": sum(1 for a in answers if a.status != 200 or not a.allowed),
        "sidecar_p50_ms": _ms(statistics.median(latencies)),
        "sidecar_p99_ms": _ms(_pct(latencies, 0.99)),
    }


def bench_sidecar_memory(
    redis_url: str, prefix: str, accounts: list[str], requests: int
) -> dict[str, float]:
    """RSS after ``requests`` checks of distinct random 200-byte account ids (each one a new
    key-cache and policy-cache candidate), beside the RSS after a warm-up on known accounts."""
    rng = random.Random(11)
    with running_sidecar(redis_url, prefix) as (proc, port):
        run_loop(sidecar_load(port, check_bodies(accounts), 2000, 1.0))
        idle = rss_mb(proc.pid)
        hostile = check_bodies(
            ["".join(rng.choices("0123456789abcdef", k=200)) for _ in range(requests)]
        )
        run_loop(sidecar_load(port, hostile, 20_000, requests / 20_000))
        after = rss_mb(proc.pid)
    return {
        "sidecar_random_id_requests": requests,
        "sidecar_rss_warm_mb": idle,
        "sidecar_rss_after_random_ids_mb": after,
        "sidecar_rss_growth_ratio": round(after / idle, 3),
    }


def bench_projection(
    client: SyncRedis, prefix: str, accounts: list[str], total: int, batch: int
) -> dict[str, float]:
    entries = list(_usage_stream(accounts, total))
    batches = [entries[i : i + batch] for i in range(0, len(entries), batch)]
    projector = Projector(client, prefix)
    started = time.perf_counter()
    applied = 0
    for chunk in batches:
        result = projector.apply_batch(chunk)
        applied += result.applied
        if result.gaps:
            raise RuntimeError(f"unexpected gap in bench data: {result.gaps[0]}")
    elapsed = time.perf_counter() - started
    if applied != total:
        raise RuntimeError(f"applied {applied} of {total}")

    started = time.perf_counter()
    for chunk in batches:
        pipe = client.pipeline(transaction=False)
        for e in chunk:
            pipe.hset(
                f"{prefix}raw{{{e['account_id']}}}:bal",
                mapping={
                    "seq": e["seq"],
                    "available": e["balance_after"],
                    "overage_used": e["overage_after"],
                    "updated_at": e["recorded_at"],
                },
            )
        pipe.execute()
    raw_elapsed = time.perf_counter() - started
    per_s, raw_per_s = total / elapsed, total / raw_elapsed
    return {
        "projection_entries_per_s": round(per_s),
        "raw_hset_per_s": round(raw_per_s),
        "projection_vs_raw_hset": round(per_s / raw_per_s, 3),
        "projection_batch": batch,
    }


def _cleanup(client: SyncRedis, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=prefix.replace("*", "\\*") + "*", count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metering bench enforce",
        description="Enforcement latency, sidecar latency and projection apply throughput, "
        "each next to a baseline in the same run: the library check vs a raw Redis GET, the "
        "sidecar at a fixed request rate vs the library check, the projection's apply vs a "
        "raw pipelined HSET. Uses METERING_REDIS_URL (or the local stack's Redis) when it "
        "answers, else starts its own redis-server. The last line of output is JSON.",
    )
    parser.add_argument(
        "--json", action="store_true", help="no progress messages, only the JSON result line"
    )
    parser.add_argument(
        "--accounts", type=int, default=1000, metavar="N", help="accounts (default: 1000)"
    )
    parser.add_argument(
        "--checks",
        type=int,
        default=20_000,
        metavar="N",
        help="library checks and raw GETs, each (default: 20000)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        metavar="N",
        help="sidecar requests per second (default: 2000)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="length of the sidecar run (default: 5)",
    )
    parser.add_argument(
        "--entries",
        type=int,
        default=100_000,
        metavar="N",
        help="ledger entries applied by the projection (default: 100000)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=2000,
        metavar="N",
        help="entries per apply batch (default: 2000)",
    )
    parser.add_argument(
        "--skip-sidecar", action="store_true", help="leave out the sidecar and its memory check"
    )
    parser.add_argument(
        "--memory-requests",
        type=int,
        default=100_000,
        metavar="N",
        help="checks of random account ids for the sidecar memory figure; 0 skips it "
        "(default: 100000)",
    )
    args = parser.parse_args(argv)

    from metering.config import load_settings

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    with ExitStack() as stack:
        url = env_value("METERING_REDIS_URL") or load_settings().redis_url
        own = not reachable(url)
        if own:
            url = stack.enter_context(LocalRedis()).url
        say(f"redis: {url} ({'own redis-server' if own else 'existing'})")
        client = connect(url)
        stack.callback(client.close)
        prefix = f"bench-{secrets.token_hex(4)}:"
        stack.callback(_cleanup, client, prefix)
        accounts = [f"acct-{i:05d}" for i in range(args.accounts)]
        seed = [e for a in accounts for e in seed_entries(a, 10**9 * CREDIT)]
        Projector(client, prefix).apply_batch(seed)
        result: dict[str, Any] = {"redis": "own" if own else "existing"}
        say("library check vs raw GET ...")
        result.update(bench_check(client, prefix, accounts, args.checks))
        if not args.skip_sidecar:
            say(f"sidecar at {args.rate:g} req/s for {args.duration:g}s ...")
            result.update(bench_sidecar(url, prefix, accounts, args.rate, args.duration))
            result["sidecar_vs_check_p99"] = round(
                result["sidecar_p99_ms"] / result["check_p99_ms"], 3
            )
            if args.memory_requests:
                say(f"sidecar memory after {args.memory_requests} random account ids ...")
                result.update(bench_sidecar_memory(url, prefix, accounts, args.memory_requests))
        say(f"projection apply of {args.entries} entries ...")
        apply_accounts = [f"apply-{i:05d}" for i in range(10_000)]
        Projector(client, prefix).apply_batch(
            [e for a in apply_accounts for e in seed_entries(a, 10**6 * CREDIT)]
        )
        result.update(bench_projection(client, prefix, apply_accounts, args.entries, args.batch))
        result["targets_met"] = (
            result["check_p99_ms"] <= 1
            and result["check_vs_raw_p99"] <= 2
            and result.get("sidecar_p99_ms", 0) <= 5
            and result.get("sidecar_rss_after_random_ids_mb", 0) <= 150
            and result["projection_entries_per_s"] >= 50_000
        )
    print(json.dumps(result))
    return 0
