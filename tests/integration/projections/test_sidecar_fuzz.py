"""Schemathesis against the sidecar: every route, positive and negative data, real Redis.

The app is the real Starlette app (in-process ASGI, lifespan run by schemathesis) over the
session's Redis, with a few accounts and live holds seeded so that generated calls also hit
real balances and real holds (positive cases are steered to them part of the time). Each
answer must be documented by ``projections/openapi.py``: no 5xx, a documented status code, the
documented content type, and a body that matches the documented schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import schemathesis
from conftest import CREDIT, LedgerBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.testclient import TestClient

from projections.apply import Projector
from projections.keys import account_pattern
from projections.sidecar import Sidecar

pytestmark = pytest.mark.integration

KEYS = {"svcA": "key-a-secret", "svcB": "key-b-secret"}
AUTH = {"X-API-Key": "key-b-secret"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 100
"""Per operation and generation mode (13 runs): about 10-20 s in all."""

ACCOUNTS = ["acme", "open-all", "unl", "broke", "ünï-☃"]
FEATURES = ["text_generation", "image_generation", "teleport", None]
HOLDS_PER_ACCOUNT = 12

OPERATIONS = [
    ("POST", "/v1/check"),
    ("POST", "/v1/reservations"),
    ("POST", "/v1/reservations/{hold_id}/commit"),
    ("POST", "/v1/reservations/{hold_id}/release"),
    ("GET", "/v1/accounts/{account_id}/balance"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]
NO_INPUT = {"/healthz", "/metrics", "/openapi.json"}
"""Nothing to make invalid: these get positive cases only."""
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or path not in NO_INPUT
]


@dataclass
class Target:
    schema: Any
    holds: list[str]


def _seed(client: redis.Redis, prefix: str) -> None:
    acme, open_all, unl, uni = (LedgerBuilder(a) for a in ("acme", "open-all", "unl", "ünï-☃"))
    broke = LedgerBuilder("broke")
    entries = [
        acme.plan("block", features=["text_generation"]),
        acme.grant("g1", 10 * CREDIT, expires_at=1_900_000_000_000),
        open_all.plan("allow", limit=5 * CREDIT),
        open_all.grant("g1", 10 * CREDIT),
        unl.plan("unlimited"),
        unl.grant("g1", CREDIT),
        broke.plan("block"),
        uni.plan("allow", limit=CREDIT),
        uni.grant("g1", 3 * CREDIT),
    ]
    assert not Projector(client, prefix).apply_batch(entries).gaps


def _holds(app: Starlette) -> list[str]:
    """Live holds made through the sidecar with the fuzzer's key (hold ids name their
    service, so holds made any other way would all be 404 to it)."""
    holds = []
    with TestClient(app) as client:
        for account in ("acme", "open-all", "unl", "ünï-☃"):
            for _ in range(HOLDS_PER_ACCOUNT):
                body = {"account_id": account, "amount": 1000, "ttl_s": 600}
                response = client.post("/v1/reservations", json=body, headers=AUTH)
                assert response.status_code == 201, response.text
                holds.append(response.json()["hold_id"])
    return holds


@pytest.fixture(scope="module")
def target(redis_url: str) -> Iterator[Target]:
    prefix = f"fz{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(redis_url)
    try:
        _seed(client, prefix)
        app = Sidecar(redis_url, prefix, KEYS).app
        holds = _holds(app)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        yield Target(schema, holds)
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan (Redis pool) started by schemathesis
        keys = list(client.scan_iter(match=account_pattern(prefix), count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


def _steer(case: Case[Any], target: Target, data: st.DataObject) -> None:
    """Point part of the positive cases at seeded accounts, real holds and sane amounts."""
    if not data.draw(st.booleans(), label="steer"):
        return
    params = case.path_parameters
    if params is not None and "hold_id" in params:
        params["hold_id"] = data.draw(st.sampled_from(target.holds), label="hold")
    if params is not None and "account_id" in params:
        params["account_id"] = data.draw(st.sampled_from(ACCOUNTS), label="account")
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("account_id"), str):
            body["account_id"] = data.draw(st.sampled_from(ACCOUNTS), label="account")
        if "feature" in body or data.draw(st.booleans(), label="add feature"):
            body["feature"] = data.draw(st.sampled_from(FEATURES), label="feature")
        small = st.integers(0, 20 * CREDIT)
        for field in ("estimated_credits", "actual"):
            if isinstance(body.get(field), int):
                body[field] = data.draw(small, label=field)
        if isinstance(body.get("amount"), int):
            body["amount"] = data.draw(st.integers(1, 20 * CREDIT), label="amount")


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_sidecar_conforms_to_its_openapi_document(
    target: Target, method: str, path: str, mode: GenerationMode
) -> None:
    operation = target.schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode, headers=dict(AUTH))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=st.data())
    def run(case: Case[Any], data: st.DataObject) -> None:
        if mode is GenerationMode.POSITIVE:
            _steer(case, target, data)
        case.call_and_validate(headers=dict(AUTH), checks=CHECKS)

    run()
