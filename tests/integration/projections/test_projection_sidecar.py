"""The HTTP sidecar: auth, validation, the endpoints, fail modes with Redis down, uvicorn."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from conftest import CREDIT, LedgerBuilder
from starlette.testclient import TestClient

from benchmarks.sidecar_load import running_sidecar
from devstack.redis import LocalRedis
from metering.net import free_port
from projections.apply import Projector
from projections.failmode import FailMode
from projections.redis_connect import SyncRedis
from projections.scripts import SCRIPT_NAMES, script
from projections.sidecar import Sidecar
from projections.warm import WARM_CONNECTIONS, WARM_TIMEOUT_S

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster_too]

KEYS = {"svcA": "key-a-secret", "svcB": "key-b-secret"}
AUTH = {"X-API-Key": "key-b-secret"}


@pytest.fixture
def seeded(rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]) -> str:
    a = ledger("acme")
    entries = [
        a.plan("block", features=["text_generation"]),
        a.grant("g1", 10 * CREDIT, expires_at=1_900_000_000_000),
    ]
    assert not Projector(rclient, prefix).apply_batch(entries).gaps
    return prefix


@pytest.fixture
def client(redis_url: str, seeded: str) -> Iterator[TestClient]:
    with TestClient(Sidecar(redis_url, seeded, KEYS).app) as test_client:
        yield test_client


def test_requests_without_or_with_wrong_key_are_refused(client: TestClient) -> None:
    body = {"account_id": "acme", "estimated_credits": 1}
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"X-API-Key": ""},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic key-a-secret"},
    ):
        response = client.post("/v1/check", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
    assert client.get("/v1/accounts/acme/balance").status_code == 401
    assert client.post("/v1/reservations/x/release").status_code == 401
    bearer = {"Authorization": "Bearer key-a-secret"}
    assert client.post("/v1/check", json=body, headers=bearer).status_code == 200


@pytest.mark.parametrize(
    ("path", "content", "status"),
    [
        ("/v1/check", b"{not json", 400),
        ("/v1/check", b"", 400),
        ("/v1/check", b"[1, 2]", 400),
        ("/v1/check", b'{"account_id": "acme"}', 422),
        ("/v1/check", b'{"account_id": 5, "estimated_credits": 1}', 422),
        ("/v1/check", b'{"account_id": "acme", "estimated_credits": 1.5}', 422),
        ("/v1/check", b'{"account_id": "acme", "estimated_credits": true}', 422),
        ("/v1/check", b'{"account_id": "acme", "estimated_credits": -1}', 422),
        ("/v1/check", b'{"account_id": "acme", "estimated_credits": 1, "feature": 3}', 422),
        ("/v1/check", b'{"account_id": "a{b}", "estimated_credits": 1}', 422),
        ("/v1/reservations", b'{"account_id": "acme", "amount": 1}', 422),
        ("/v1/reservations", b'{"account_id": "acme", "amount": 1, "ttl_s": 0}', 422),
        ("/v1/reservations", b'{"account_id": "acme", "amount": 1, "ttl_s": "5"}', 422),
        ("/v1/reservations/bad-id/commit", b'{"actual": 1}', 422),
        ("/v1/reservations/" + "a" * 32 + ":acme/commit", b'{"actual": "1"}', 422),
    ],
)
def test_malformed_bodies_are_rejected(
    client: TestClient, path: str, content: bytes, status: int
) -> None:
    response = client.post(path, content=content, headers=AUTH)
    assert response.status_code == status
    body = response.json()
    assert body["error"] and body["message"]


def test_check_reserve_commit_release_balance(client: TestClient) -> None:
    check = client.post(
        "/v1/check",
        json={"account_id": "acme", "feature": "text_generation", "estimated_credits": CREDIT},
        headers=AUTH,
    )
    assert check.status_code == 200
    assert check.json()["allowed"] is True and check.json()["available"] == 10 * CREDIT
    denied = client.post(
        "/v1/check",
        json={"account_id": "acme", "feature": "image_generation", "estimated_credits": 1},
        headers=AUTH,
    ).json()
    assert (denied["allowed"], denied["reason"]) == (False, "feature_not_in_plan")

    held = client.post(
        "/v1/reservations",
        json={"account_id": "acme", "amount": 6 * CREDIT, "ttl_s": 30},
        headers=AUTH,
    )
    assert held.status_code == 201
    hold_id = held.json()["hold_id"]
    refused = client.post(
        "/v1/reservations",
        json={"account_id": "acme", "amount": 5 * CREDIT, "ttl_s": 30},
        headers=AUTH,
    )
    assert refused.status_code == 200 and refused.json()["reason"] == "insufficient_credits"

    balance = client.get("/v1/accounts/acme/balance", headers=AUTH).json()
    assert balance["reserved"] == 6 * CREDIT and balance["plan"] == "pro"
    assert balance["period_end"] == 1_702_592_000_000
    assert balance["grants"] == [
        {
            "grant_id": "g1",
            "source": "plan",
            "remaining": 10 * CREDIT,
            "amount": 10 * CREDIT,
            "priority": 10,
            "expires_at": 1_900_000_000_000,
            "effective_at": balance["grants"][0]["effective_at"],
        }
    ]
    commit = client.post(
        f"/v1/reservations/{hold_id}/commit", json={"actual": 2 * CREDIT}, headers=AUTH
    )
    assert commit.status_code == 200 and commit.json() == {
        "hold_id": hold_id,
        "status": "committed",
        "actual": 2 * CREDIT,
        "committed": 2 * CREDIT,
        "held_back": 0,
    }
    late = client.post(f"/v1/reservations/{hold_id}/release", headers=AUTH)
    assert late.status_code == 409 and late.json()["error"] == "hold_conflict"
    gone = client.post(f"/v1/reservations/{'0' * 32}:acme/release", headers=AUTH)
    assert gone.status_code == 404 and gone.json()["error"] == "hold_not_found"
    missing = client.get("/v1/accounts/nobody/balance", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_account"
    assert client.get("/v1/nothing", headers=AUTH).status_code == 404
    assert client.get("/v1/check", headers=AUTH).status_code == 405


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/check", "/v1/reservations", "/v1/accounts/{account_id}/balance"} <= set(
        spec["paths"]
    )


def test_redis_down_answers_per_fail_mode(ledger: type[LedgerBuilder]) -> None:
    body = {"estimated_credits": 1}
    with LocalRedis() as server:
        seed = redis.Redis.from_url(server.url)
        blk, alw = ledger("blk"), ledger("alw")
        Projector(seed, "fm:").apply_batch(
            [blk.plan("block"), blk.grant("g", 5), alw.plan("allow", limit=9), alw.grant("g", 5)]
        )
        seed.close()
        apps = {
            mode: Sidecar(server.url, "fm:", KEYS, mode, redis_timeout_s=0.2) for mode in FailMode
        }
        clients = {mode: TestClient(app.app) for mode, app in apps.items()}
        for c in clients.values():
            c.__enter__()
        try:
            for c in clients.values():  # learn the policies while Redis is up
                for account in ("blk", "alw"):
                    r = c.post("/v1/check", json={**body, "account_id": account}, headers=AUTH)
                    assert r.json()["allowed"] is True and r.json()["degraded"] is False
            server.stop()

            def ask(mode: FailMode, account: str) -> dict:  # type: ignore[type-arg]
                r = clients[mode].post(
                    "/v1/check", json={**body, "account_id": account}, headers=AUTH
                )
                assert r.status_code == 200
                assert r.json()["degraded"] is True
                return r.json()  # type: ignore[no-any-return]

            assert ask(FailMode.AUTO, "alw")["allowed"] is True
            assert ask(FailMode.AUTO, "blk")["allowed"] is False
            assert ask(FailMode.AUTO, "never-seen")["allowed"] is False
            assert ask(FailMode.OPEN, "blk")["reason"] == "redis_unavailable_fail_open"
            assert ask(FailMode.CLOSED, "alw")["reason"] == "redis_unavailable_fail_closed"
            c = clients[FailMode.AUTO]
            r = c.post(
                "/v1/reservations",
                json={"account_id": "alw", "amount": 1, "ttl_s": 5},
                headers=AUTH,
            )
            degraded = r.json()
            assert r.status_code == 200, "no hold was made: never 201"
            assert degraded["allowed"] is True and degraded["degraded"] is True
            assert degraded["hold_id"] is None and degraded["spendable"] == 0
            r = c.post(
                "/v1/reservations",
                json={"account_id": "blk", "amount": 1, "ttl_s": 5},
                headers=AUTH,
            )
            assert r.status_code == 200 and r.json()["allowed"] is False
            assert c.get("/v1/accounts/alw/balance", headers=AUTH).status_code == 503
            hold = "a" * 32 + ":alw"  # not this key's: known without Redis
            assert c.post(f"/v1/reservations/{hold}/release", headers=AUTH).status_code == 404
            assert c.get("/healthz").status_code == 503
            assert c.post("/v1/check", content=b"{", headers=AUTH).status_code == 400
        finally:
            for c in clients.values():
                c.__exit__(None, None, None)


def test_the_sidecar_starts_warm_and_starts_without_redis() -> None:
    """Scripts loaded and connections open before the first request (a cold burst timed out
    against a healthy Redis and opened the breaker); a Redis that is down delays nothing."""
    with LocalRedis() as server:
        seen = redis.Redis.from_url(server.url)
        with TestClient(Sidecar(server.url, "warm:", KEYS).app):
            shas = [script(name).sha for name in SCRIPT_NAMES]
            assert all(seen.script_exists(*shas))
            assert len(seen.client_list()) >= WARM_CONNECTIONS + 1  # and this client
        seen.close()
    started = time.monotonic()
    with TestClient(Sidecar(f"redis://127.0.0.1:{free_port()}", "warm:", KEYS).app) as cold:
        assert time.monotonic() - started < WARM_TIMEOUT_S
        assert cold.get("/healthz").status_code == 503
        r = cold.post(
            "/v1/check", json={"account_id": "acme", "estimated_credits": 1}, headers=AUTH
        )
        assert r.status_code == 200 and r.json()["degraded"] is True


def test_real_uvicorn_server(redis_url: str, seeded: str) -> None:
    keys = {"METERING_API_KEYS": "svcA:key-a-secret,svcB:key-b-secret"}
    with running_sidecar(redis_url, seeded, keys) as (_, port):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=AUTH, timeout=5) as http:
            r = http.post("/v1/check", json={"account_id": "acme", "estimated_credits": CREDIT})
            assert r.status_code == 200 and r.json()["allowed"] is True
            assert http.get("/v1/accounts/acme/balance").json()["available"] == 10 * CREDIT
            assert http.post("/v1/check", content=b"nope").status_code == 400
            assert httpx.post(f"{base}/v1/check", json={}).status_code == 401
