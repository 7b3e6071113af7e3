"""Enforcement library against a real Redis: decisions, atomic holds, TTL release."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import CREDIT, LedgerBuilder

from projections.apply import Projector
from projections.enforcement import (
    AsyncEnforcer,
    EnforcementError,
    Enforcer,
    ReservationDenied,
)
from projections.redis_connect import SyncRedis, aconnect, connect

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster_too]


def seed(client: SyncRedis, prefix: str, builder: LedgerBuilder, *entries: dict) -> None:  # type: ignore[type-arg]
    assert not Projector(client, prefix).apply_batch(list(entries)).gaps


def test_check_reasons_and_policies(
    rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    blk, alw, unl = ledger("blk"), ledger("alw"), ledger("unl")
    seed(rclient, prefix, blk, blk.plan("block", features=["text_generation"]), blk.grant("g", 10))
    seed(rclient, prefix, alw, alw.plan("allow", limit=5), alw.grant("g", 10), alw.debit(12))
    seed(rclient, prefix, unl, unl.plan("unlimited"), unl.grant("g", 1))
    enf = Enforcer(rclient, prefix)

    ok = enf.check("blk", "text_generation", 10)
    assert (ok.allowed, ok.reason, ok.available, ok.spendable, ok.policy) == (
        True,
        "ok",
        10,
        10,
        "block",
    )
    assert enf.check("blk", "text_generation", 11).reason == "insufficient_credits"
    assert enf.check("blk", "image_generation", 1).reason == "feature_not_in_plan"
    assert enf.check("nobody", "text_generation", 1).reason == "unknown_account"
    assert not enf.check("nobody", None, 0).allowed

    # allow: 0 available, 2 of 5 overage used -> 3 of headroom left.
    assert enf.check("alw", None, 3).allowed
    denied = enf.check("alw", None, 4)
    assert (denied.allowed, denied.overage_used, denied.overage_limit) == (False, 2, 5)
    assert enf.check("unl", "anything", 10**12).allowed
    assert enf.check("unl", None, 10**12).spendable is None

    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(EnforcementError):
            enf.check("blk", None, bad)  # type: ignore[arg-type]
    with pytest.raises(EnforcementError):
        enf.check("a{b}", None, 1)


def test_200_concurrent_reserves_exactly_100_succeed(
    redis_url: str, rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("race")
    seed(rclient, prefix, a, a.plan("block"), a.grant("g", 100 * 7 * CREDIT))
    client = connect(redis_url, max_connections=64)
    enf = Enforcer(client, prefix)

    def attempt(_: int) -> bool:
        try:
            enf.reserve("race", 7 * CREDIT, ttl_s=60)
            return True
        except ReservationDenied as exc:
            assert exc.decision.reason == "insufficient_credits"
            return False

    with ThreadPoolExecutor(max_workers=32) as ex:
        results = list(ex.map(attempt, range(200)))
    client.close()
    assert sum(results) == 100
    balance = Enforcer(rclient, prefix).balance("race")
    assert balance is not None and balance.reserved == 700 * CREDIT


def test_200_concurrent_async_reserves_exactly_100_succeed(
    redis_url: str, rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("arace")
    seed(rclient, prefix, a, a.plan("allow", limit=30), a.grant("g", 70))

    async def run() -> list[bool]:
        # A cluster client opens up to max_connections per node, then refuses: room for all.
        client = aconnect(redis_url, max_connections=200)
        enf = AsyncEnforcer(client, prefix)
        try:
            decisions = await asyncio.gather(
                *(enf.try_reserve("arace", 1, ttl_s=60) for _ in range(200))
            )
            return [d.allowed for d in decisions]
        finally:
            await client.aclose()

    assert sum(asyncio.run(run())) == 100  # 70 available + 30 overage headroom


def test_hold_ttl_releases_it(rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]) -> None:
    a = ledger("ttl")
    seed(rclient, prefix, a, a.plan(), a.grant("g", 10))
    enf = Enforcer(rclient, prefix)
    hold = enf.reserve("ttl", 10, ttl_s=0.2)
    assert enf.check("ttl", None, 1).reason == "insufficient_credits"
    time.sleep(0.35)
    after = enf.check("ttl", None, 10)
    assert after.allowed and after.reserved == 0
    assert not enf.commit(hold, 10)  # expired holds cannot be committed
    assert not enf.release(hold)


def test_commit_release_and_validation(
    rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("cr")
    seed(rclient, prefix, a, a.plan(), a.grant("g", 100))
    enf = Enforcer(rclient, prefix, settle_ttl_s=0.2)
    h1 = enf.reserve("cr", 60, ttl_s=60)
    with pytest.raises(ReservationDenied):
        enf.reserve("cr", 41, ttl_s=60)
    assert enf.commit(h1, 0)  # nothing spent: released at once
    h2 = enf.reserve("cr", 100, ttl_s=60)
    assert enf.commit(h2, 30)
    assert enf.check("cr", None, 70).allowed and not enf.check("cr", None, 71).allowed
    time.sleep(0.3)  # the ledger debit never came: the settle TTL frees the hold
    assert enf.check("cr", None, 100).allowed
    for bad_hold in ("nope", "x" * 32, ""):
        with pytest.raises(EnforcementError):
            enf.release(bad_hold)
    with pytest.raises(EnforcementError):
        enf.reserve("cr", 0, ttl_s=1)
    with pytest.raises(EnforcementError):
        enf.reserve("cr", 1, ttl_s=0)
    with pytest.raises(ReservationDenied) as info:
        enf.reserve("ghost", 1, ttl_s=1)
    assert info.value.decision.reason == "unknown_account"
