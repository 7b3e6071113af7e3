"""Fixtures of the projection tests: a unique key prefix, a Redis client, a ledger builder.

A module marked ``redis_cluster_too`` runs each of its tests twice: on the session's single
Redis and on the session's Redis Cluster (``redis_url`` is then the ``redis+cluster://`` URL).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from projections.keys import account_pattern, sentinel_pattern
from projections.redis_connect import SyncRedis, connect

CREDIT = 1_000_000


class LedgerBuilder:
    """Coherent LedgerEntry dicts for one account (seq, balance_after, grants tracked)."""

    def __init__(self, account: str, start_ms: int = 1_700_000_000_000) -> None:
        self.account = account
        self.seq = 0
        self.balance = 0
        self.overage = 0
        self.now = start_ms
        self.grants: dict[str, int] = {}

    def _entry(self, kind: str, amount: int, **extra: Any) -> dict[str, Any]:
        self.seq += 1
        self.now += 1000
        entry: dict[str, Any] = {
            "entry_id": f"{self.account}-{self.seq}",
            "account_id": self.account,
            "seq": self.seq,
            "type": kind,
            "amount": amount,
            "allocations": [],
            "balance_after": self.balance,
            "overage_after": self.overage,
            "cause_id": f"cause-{self.seq}",
            "subject": None,
            "feature": None,
            "model": None,
            "price_version": None,
            "occurred_at": self.now,
            "recorded_at": self.now + 5,
            "period_start": 1_700_000_000_000,
            "period_end": 1_702_592_000_000,
            "reason": None,
            "reservation_id": None,
            "grant": None,
            "terms": None,
        }
        entry.update(extra)
        return entry

    def plan(
        self,
        policy: str = "block",
        limit: int = 0,
        features: list[str] | None = None,
        plan_id: str = "pro",
    ) -> dict[str, Any]:
        terms = {
            "plan_id": plan_id,
            "overage_policy": policy,
            "overage_limit": limit,
            "features": features,
            "monthly_credits": 100 * CREDIT,
        }
        return self._entry("PLAN_ASSIGNED", 0, terms=terms)

    def grant(
        self, grant_id: str, amount: int, priority: int = 10, expires_at: int | None = None
    ) -> dict[str, Any]:
        self.balance += amount
        self.grants[grant_id] = amount
        info = {
            "grant_id": grant_id,
            "source": "plan",
            "amount": amount,
            "priority": priority,
            "effective_at": self.now,
            "expires_at": expires_at,
            "cost_basis_micros": None,
        }
        allocations = [{"grant_id": grant_id, "amount": amount}]
        return self._entry("GRANT_CREATED", amount, grant=info, allocations=allocations)

    def debit(self, amount: int, reservation_id: str | None = None) -> dict[str, Any]:
        """Burn from grants in insertion order; the rest is overage."""
        allocations = []
        left = amount
        for gid, remaining in self.grants.items():
            take = min(left, remaining)
            if take:
                allocations.append({"grant_id": gid, "amount": -take})
                self.grants[gid] -= take
                left -= take
        self.balance -= amount - left
        self.overage += left
        return self._entry(
            "USAGE_DEBIT",
            -amount,
            allocations=allocations,
            reservation_id=reservation_id,
            feature="text_generation",
        )

    def expire(self, grant_id: str) -> dict[str, Any]:
        remaining = self.grants.pop(grant_id)
        self.balance -= remaining
        allocations = [{"grant_id": grant_id, "amount": -remaining}]
        return self._entry("GRANT_EXPIRED", -remaining, allocations=allocations)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "redis_cluster_too"
    ):
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True)


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, stack: Any) -> str:
    """The session's Redis, or its Redis Cluster for the ``cluster`` parameter (session-scoped
    like the fixture it overrides: module fixtures of this package use it)."""
    if getattr(request, "param", "single") == "cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    return stack.redis_url


@pytest.fixture
def ledger() -> type[LedgerBuilder]:
    return LedgerBuilder


@pytest.fixture
def make_prefix(redis_url: str) -> Iterator[Callable[[], str]]:
    """Key prefixes of this test alone; their keys are deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"t{uuid.uuid4().hex[:10]}:")
        return made[-1]

    yield make
    client = connect(redis_url)
    try:
        for value in made:
            keys = list(client.scan_iter(match=account_pattern(value), count=1000))
            keys += client.scan_iter(match=sentinel_pattern(value), count=1000)
            if keys:
                client.unlink(*keys)
    finally:
        client.close()


@pytest.fixture
def prefix(make_prefix: Callable[[], str]) -> str:
    return make_prefix()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[SyncRedis]:
    client = connect(redis_url)
    yield client
    client.close()
