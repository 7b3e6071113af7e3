"""kill -9 a Redis Cluster master while the sidecar serves: fail-mode answers while its
replica takes over, then real ones again; no 5xx, and no account spends more than it has.

The cluster is this test's own (six local nodes), not the session's: a master dies here.
Two loads run at once against ``metering run sidecar``:

- an open-loop stream of checks (from a fresh process, as the Redis pause test) over accounts
  under ``allow`` and ``block`` policies: every answer is a 200; an answer given while the
  master is down follows the fail mode (``auto``: the account's policy); from two seconds after
  the replica took over, every answer is the real one;
- reservations of 1 credit against small ``block`` accounts (10 credits each), until each
  is refused: the holds granted per account never exceed its balance, and once the cluster
  is healthy again, Redis still holds every hold the sidecar granted (none was lost with the
  dead master).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from benchmarks.enforce import seed_entries
from benchmarks.sidecar_load import (
    BENCH_KEY,
    check_bodies,
    load_in_a_fresh_process,
    running_sidecar,
)
from devstack.redis_cluster import LocalRedisCluster
from projections.apply import Projector
from projections.enforcement import Enforcer
from projections.redis_connect import connect

pytestmark = pytest.mark.integration

CREDIT = 1_000_000
PREFIX = "failover:"
RATE = 400.0
DURATION_S = 14.0
KILL_AT_S = 4.0
TIGHT = [f"tight-{i}" for i in range(12)]
TIGHT_CREDITS = 10


def _wait_promoted(cluster: LocalRedisCluster, dead: int, timeout: float = 30.0) -> float:
    """Block until three live masters answer again (the dead one's replica promoted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        masters = [p for p in cluster.cluster.masters() if p != dead]
        if len(masters) == 3:
            return time.perf_counter()
        time.sleep(0.05)
    raise AssertionError("no replica took over in time")


@pytest.mark.timeout(240)
def test_a_master_killed_under_load_fails_over_without_5xx_or_overspend() -> None:
    accounts = [f"open-{i}" for i in range(30)] + [f"shut-{i}" for i in range(30)]
    policy = {a: ("allow" if a.startswith("open") else "block") for a in accounts}
    with LocalRedisCluster() as cluster:
        client = connect(cluster.url)
        entries = [e for a in accounts for e in seed_entries(a, 10**6 * CREDIT, policy[a])]
        entries += [e for a in TIGHT for e in seed_entries(a, TIGHT_CREDITS * CREDIT, "block")]
        assert not Projector(client, PREFIX).apply_batch(entries).gaps
        marks: dict[str, float] = {}
        granted: Counter[str] = Counter()
        statuses: Counter[int] = Counter()

        def kill_a_master() -> None:
            time.sleep(KILL_AT_S)
            # The master of the first tight account: its holds are the ones at risk.
            victim = client.get_node_from_key(f"{PREFIX}{{{TIGHT[0]}}}:bal")
            marks["kill"] = time.perf_counter()
            cluster.kill(victim.port)
            marks["promoted"] = _wait_promoted(cluster, victim.port)

        def reserve_until_refused(port: int) -> None:
            """1-credit holds round-robin over the tight accounts, all through the run."""
            stop_at = time.monotonic() + DURATION_S
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": BENCH_KEY}, timeout=5
            ) as http:
                while time.monotonic() < stop_at:
                    for account in TIGHT:
                        body = {"account_id": account, "amount": CREDIT, "ttl_s": 600}
                        answer = http.post("/v1/reservations", json=body)
                        statuses[answer.status_code] += 1
                        if answer.status_code == 201:
                            granted[account] += 1
                    time.sleep(0.01)

        with running_sidecar(cluster.url, PREFIX) as (_, port):
            bodies = check_bodies(accounts)
            load_in_a_fresh_process(port, bodies, RATE, 1.0)  # warm-up
            killer = threading.Thread(target=kill_a_master, daemon=True)
            reserver = threading.Thread(target=reserve_until_refused, args=(port,), daemon=True)
            killer.start()
            reserver.start()
            answers = load_in_a_fresh_process(port, bodies, RATE, DURATION_S)
            killer.join()
            reserver.join()
        # The cluster is whole again: every hold granted is still in Redis.
        enforcer = Enforcer(client, PREFIX)
        held = {a: (enforcer.balance(a) or pytest.fail(a)).reserved for a in TIGHT}
        client.close()

    kill, promoted = marks["kill"], marks["promoted"]
    print(
        f"failover: replica promoted {promoted - kill:.2f} s after the kill; "
        f"{sum(1 for a in answers if a.degraded)} of {len(answers)} checks degraded; "
        f"reservations {dict(statuses)}, granted {sum(granted.values())}"
    )
    assert {a.status for a in answers} == {200}, "no 5xx, no 4xx for good checks"
    assert set(statuses) <= {200, 201}, statuses
    for a in answers:
        if a.degraded:
            assert a.allowed == (policy[accounts[a.body]] == "allow"), "fail mode: the policy"
    before = [a for a in answers if a.due < kill - 0.1]
    after = [a for a in answers if a.due >= promoted + 2.0]
    assert before and after
    assert not [a for a in before + after if a.degraded or not a.allowed]
    # No overspend: never more holds than credits, and no granted hold was lost.
    assert all(granted[a] <= TIGHT_CREDITS for a in TIGHT), granted
    assert held == {a: granted[a] * CREDIT for a in TIGHT}, (held, granted)
