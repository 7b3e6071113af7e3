"""Hold bookkeeping a review found fragile: settlement records, holds that outlive a lost
balance hash, reused hold ids, error replies and holds whose answer was cut."""

from __future__ import annotations

import asyncio

import pytest
import redis
from conftest import CREDIT, LedgerBuilder
from starlette.testclient import TestClient

from devstack.redis import LocalRedis
from projections.apply import Projector
from projections.breaker import BreakerState, CircuitBreaker
from projections.enforcement import UNKNOWN_FEATURE_DECISION, Enforcer
from projections.features import FeatureCatalog
from projections.keys import account_keys
from projections.sidecar import Sidecar

pytestmark = pytest.mark.integration
AUTH = {"X-API-Key": "key-a"}


def _funded(rclient: redis.Redis, prefix: str, ledger: type[LedgerBuilder], account: str):  # type: ignore[no-untyped-def]
    a = ledger(account)
    Projector(rclient, prefix).apply_batch([a.plan(), a.grant("g1", 10 * CREDIT)])
    return a


def test_a_reservation_id_shaped_like_a_settlement_record_settles_nothing(
    rclient: redis.Redis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = _funded(rclient, prefix, ledger, "acct-s")
    enforcer = Enforcer(rclient, prefix)
    hold = enforcer.reserve("acct-s", 2 * CREDIT, ttl_s=60)
    assert enforcer.release(hold)
    result = Projector(rclient, prefix).apply_batch(
        [a.debit(1 * CREDIT, reservation_id="s:" + hold)]
    )
    assert result.applied == 1
    assert enforcer.release(hold)  # the settlement record is still there: same answer
    balance = enforcer.balance("acct-s")
    assert balance is not None and (balance.available, balance.reserved) == (9 * CREDIT, 0)


def test_holds_that_outlive_a_lost_balance_stay_reserved(
    rclient: redis.Redis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("acct-h")
    entries = [a.plan(), a.grant("g1", 10 * CREDIT)]
    projector = Projector(rclient, prefix)
    projector.apply_batch(entries)
    enforcer = Enforcer(rclient, prefix)
    enforcer.reserve("acct-h", 3 * CREDIT, ttl_s=60)
    keys = account_keys(prefix, "acct-h")
    rclient.delete(keys.balance, keys.grants)  # the holds survive
    projector.apply_batch(entries)
    balance = enforcer.balance("acct-h")
    assert balance is not None and (balance.available, balance.reserved) == (
        10 * CREDIT,
        3 * CREDIT,
    )


def test_a_settled_hold_id_cannot_be_reserved_again(
    rclient: redis.Redis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    _funded(rclient, prefix, ledger, "acct-r")
    enforcer = Enforcer(rclient, prefix)
    hold = enforcer.reserve("acct-r", 1 * CREDIT, ttl_s=60)
    assert enforcer.release(hold)
    again = enforcer.try_reserve("acct-r", 1 * CREDIT, 60, hold_id=hold)
    assert not again.allowed and again.reason == "duplicate_hold_id"


def test_error_replies_answer_by_the_fail_mode_not_500(
    ledger: type[LedgerBuilder],
) -> None:
    with LocalRedis() as local:
        client = redis.Redis.from_url(local.url)
        _funded(client, "m:", ledger, "acct-m")
        sidecar = Sidecar(local.url, "m:", {"svcA": "key-a"})
        with TestClient(sidecar.app) as http:
            client.config_set("maxmemory", "1")
            client.config_set("maxmemory-policy", "noeviction")
            try:
                body = {"account_id": "acct-m", "amount": CREDIT, "ttl_s": 30}
                r = http.post("/v1/reservations", json=body, headers=AUTH)
                assert r.status_code == 200 and r.json()["degraded"] is True
                not_hex = "\u00e9" * 32
                bad = http.post(
                    f"/v1/reservations/{not_hex}:acct-m/commit", json={"actual": 1}, headers=AUTH
                )
                assert bad.status_code == 404  # a non-hex token is nobody's hold
            finally:
                client.config_set("maxmemory", "0")
        client.close()


def test_a_reserve_cut_at_its_deadline_releases_its_hold_and_unknown_features_skip_redis(
    redis_url: str, prefix: str, ledger: type[LedgerBuilder], rclient: redis.Redis
) -> None:
    _funded(rclient, prefix, ledger, "acct-c")
    catalog = FeatureCatalog({"text_generation"})
    sidecar = Sidecar(redis_url, prefix, {"svcA": "key-a"}, features=catalog)

    async def run() -> None:
        async with sidecar._lifespan(sidecar.app):
            enforcer = sidecar.enforcer
            assert enforcer is not None
            hold = (await enforcer.try_reserve("acct-c", 2 * CREDIT, 60)).hold_id
            assert hold is not None
            sidecar._release_later(hold)  # as after a reserve whose answer was cut
            await asyncio.gather(*sidecar._background)
            balance = await enforcer.balance("acct-c")
            assert balance is not None and balance.reserved == 0
            # An unknown feature is answered without Redis: it never probes (nor closes) the
            # breaker while Redis is down.
            sidecar.breaker = CircuitBreaker(failures=1, min_span_s=0, cooldown_s=0.01)
            sidecar.breaker.failure()
            await asyncio.sleep(0.02)
            assert await sidecar.decide_check("acct-c", "teleport", 1) == UNKNOWN_FEATURE_DECISION
            assert sidecar.breaker.state is BreakerState.HALF_OPEN

    asyncio.run(run())
