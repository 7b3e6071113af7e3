"""The sidecar under hostile input: huge, streamed, deep or malformed requests, hold abuse.

One test per rule of the sidecar's contract (see ``projections/openapi.py``):

* the API key is checked before the body is read (401 without consuming it);
* a body over 65,536 bytes is 413 ``payload_too_large`` on every POST route, whether its
  size is declared or it is streamed past the limit;
* JSON nested too deep is 400 ``invalid_json``, never a 500;
* identifiers (account_id, feature, a hold id's account) are 1..256 UTF-8 bytes without
  braces, else 422 ``invalid_request`` - in a body or in the path;
* an unknown feature is denied with ``unknown_feature``;
* holds: 201 with a hold id, idempotent commit/release, 409 ``hold_conflict``, 404 for
  another service's hold, commits capped at what the account can spend;
* degraded answers (Redis unreachable) carry ``degraded: true``; a degraded reserve is 200
  without a hold and with ``spendable: 0``; ``/healthz`` reports the breaker;
* nothing gets a 5xx, and oversized ids do not grow the process's memory.

Streaming is tested two ways: in-process through httpx's ASGI transport, which hands the body
to the app only as the app asks for it (so the bytes a generator yielded are exactly what the
app consumed), and against a real uvicorn process over a raw socket that sends the start of a
body and then stalls (an answer must come without the rest of the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import pytest
import redis
from conftest import CREDIT, LedgerBuilder
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import Message

from benchmarks.sidecar_load import running_sidecar
from devstack.redis import LocalRedis
from metering.net import free_port
from projections.apply import Projector
from projections.failmode import FailMode
from projections.keys import account_pattern
from projections.sidecar import Sidecar

pytestmark = pytest.mark.integration

KEYS = {"svcA": "key-a-secret", "svcB": "key-b-secret"}
AUTH = {"X-API-Key": "key-b-secret"}
AUTH_A = {"X-API-Key": "key-a-secret"}
MAX_BODY = 65_536
MAX_SAFE = 2**53 - 1
CHUNK = 16_384
FAKE_HOLD = "0" * 32 + ":acme"
POST_ROUTES = [
    "/v1/check",
    "/v1/reservations",
    f"/v1/reservations/{FAKE_HOLD}/commit",
    f"/v1/reservations/{FAKE_HOLD}/release",
]
BODY_ROUTES = POST_ROUTES[:3]
"""The POST routes that parse a body (release takes none)."""


def _route_id(path: str) -> str:
    return {"/v1/check": "check", "/v1/reservations": "reserve"}.get(path, path.rsplit("/")[-1])


BAD_KEYS: list[dict[str, str]] = [
    {},
    {"X-API-Key": "wrong"},
    {"Authorization": "Bearer wrong"},
]


class Answer(Protocol):
    """An HTTP response from httpx or from Starlette's TestClient (httpx2)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self, **kwargs: Any) -> Any: ...


def _seed(client: redis.Redis, prefix: str) -> None:
    acme, allf, ovr, unl = (LedgerBuilder(a) for a in ("acme", "allf", "ovr", "unl"))
    entries = [
        acme.plan("block", features=["text_generation"]),
        acme.grant("g1", 10 * CREDIT, expires_at=1_900_000_000_000),
        allf.plan("block"),
        allf.grant("g1", 10 * CREDIT),
        ovr.plan("allow", limit=5 * CREDIT),
        ovr.grant("g1", 10 * CREDIT),
        unl.plan("unlimited"),
        unl.grant("g1", CREDIT),
    ]
    assert not Projector(client, prefix).apply_batch(entries).gaps


@pytest.fixture
def seeded(rclient: redis.Redis, prefix: str) -> str:
    _seed(rclient, prefix)
    return prefix


@pytest.fixture
def sidecar(redis_url: str, seeded: str) -> Sidecar:
    return Sidecar(redis_url, seeded, KEYS)


@pytest.fixture
def client(sidecar: Sidecar) -> Iterator[TestClient]:
    with TestClient(sidecar.app, raise_server_exceptions=False) as test_client:
        yield test_client


# -- helpers -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _asgi(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in-process, lifespan running; bodies are handed over lazily."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http:
            yield http


class CountingBody:
    """A body generator that counts what it yielded and stops once ``stop_after`` is reached
    (the test fails on the count; no need to push hundreds of megabytes to see it)."""

    def __init__(self, stop_after: int, prefix: bytes = b'{"account_id": "acme", "pad": "') -> None:
        self.stop_after = stop_after
        self.prefix = prefix
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = self.prefix + b"x" * (CHUNK - len(self.prefix))
        while self.sent < self.stop_after:
            self.sent += len(chunk)
            yield chunk
            chunk = b"x" * CHUNK


def _streamed(
    app: Starlette, path: str, headers: dict[str, str], stop_after: int
) -> tuple[Answer, int, float]:
    """POST a streamed body to ``path``; (response, bytes the app consumed, seconds)."""
    body = CountingBody(stop_after)

    async def go() -> Answer:
        async with _asgi(app) as http:
            return await http.post(path, content=body, headers=headers)

    start = time.monotonic()
    response = asyncio.run(go())
    return response, body.sent, time.monotonic() - start


def _error(response: Answer, status: int, error: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error, response.text[:300]


def _check(client: TestClient, account: Any, cost: int = 1, **extra: Any) -> Answer:
    body = {"account_id": account, "estimated_credits": cost, **extra}
    return client.post("/v1/check", json=body, headers=AUTH)


def _reserve(
    client: TestClient, account: str, amount: int, headers: dict[str, str] = AUTH, **extra: Any
) -> Answer:
    body = {"account_id": account, "amount": amount, "ttl_s": 60, **extra}
    return client.post("/v1/reservations", json=body, headers=headers)


def _hold(client: TestClient, account: str, amount: int, headers: dict[str, str] = AUTH) -> str:
    response = _reserve(client, account, amount, headers)
    assert response.status_code == 201, response.text
    hold_id = response.json()["hold_id"]
    assert isinstance(hold_id, str) and hold_id
    return hold_id


def _commit(
    client: TestClient, hold_id: str, actual: Any, headers: dict[str, str] = AUTH
) -> Answer:
    return client.post(
        f"/v1/reservations/{hold_id}/commit", json={"actual": actual}, headers=headers
    )


def _release(client: TestClient, hold_id: str, headers: dict[str, str] = AUTH) -> Answer:
    return client.post(f"/v1/reservations/{hold_id}/release", headers=headers)


def _balance(client: TestClient, account: str) -> dict[str, Any]:
    response = client.get(f"/v1/accounts/{account}/balance", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# -- a real uvicorn process ----------------------------------------------------------------


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[Server]:
    """``metering run sidecar`` on a free port over the session's Redis (own prefix)."""
    prefix = f"h{uuid.uuid4().hex[:10]}:"
    seed = redis.Redis.from_url(redis_url)
    _seed(seed, prefix)
    api_keys = {"METERING_API_KEYS": "svcA:key-a-secret,svcB:key-b-secret"}
    try:
        with running_sidecar(redis_url, prefix, api_keys) as (proc, port):
            yield Server(port, proc)
    finally:
        keys = list(seed.scan_iter(match=account_pattern(prefix), count=1000))
        if keys:
            seed.unlink(*keys)
        seed.close()


def _stalled(port: int, head: bytes, sent: bytes, wait_s: float = 3.0) -> int | None:
    """Send ``head`` and the start of a body, then stall; the status answered within
    ``wait_s``, or None if the server sat waiting for the rest of the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):  # the server may close once it has answered
            sock.sendall(sent)
        data = b""
        try:
            while b"\r\n" not in data:
                more = sock.recv(4096)
                if not more:
                    break
                data += more
        except TimeoutError:
            return None
        except OSError:  # reset after answering: keep what arrived
            pass
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data.split(b" ", 2)[1])


def _head(path: str, headers: dict[str, str], framing: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(framing)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# -- auth before body ----------------------------------------------------------------------


@pytest.mark.parametrize("path", POST_ROUTES, ids=_route_id)
def test_no_key_streamed_300mb_body_is_401_without_reading_it(sidecar: Sidecar, path: str) -> None:
    for headers in BAD_KEYS:
        # A "300 MB" body: the generator stops at 4 MB (far past anything the app may read).
        response, consumed, seconds = _streamed(sidecar.app, path, headers, stop_after=4 << 20)
        _error(response, 401, "unauthorized")
        assert consumed == 0, f"{path} {headers}: app read {consumed} bytes before 401"
        assert seconds < 5


@pytest.mark.parametrize("path", POST_ROUTES, ids=_route_id)
def test_no_key_declared_300mb_body_is_401_without_reading_it(sidecar: Sidecar, path: str) -> None:
    headers = {"Content-Length": str(300 << 20)}
    response, consumed, _ = _streamed(sidecar.app, path, headers, stop_after=4 << 20)
    _error(response, 401, "unauthorized")
    assert consumed == 0, f"{path}: app read {consumed} bytes before 401"


@pytest.mark.parametrize("path", POST_ROUTES, ids=_route_id)
def test_real_server_answers_401_before_a_stalled_body(server: Server, path: str) -> None:
    chunked = _stalled(
        server.port, _head(path, {}, "Transfer-Encoding: chunked"), _chunk(b"x" * CHUNK)
    )
    assert chunked == 401, f"{path}: got {chunked} (None: the server waited for the body)"
    declared = _stalled(
        server.port, _head(path, {}, f"Content-Length: {300 << 20}"), b"{" + b"x" * CHUNK
    )
    assert declared == 401, f"{path}: got {declared} (None: the server waited for the body)"


# -- 413 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", POST_ROUTES, ids=_route_id)
def test_10mb_body_with_key_is_413(client: TestClient, path: str) -> None:
    body = b'{"account_id": "acme", "estimated_credits": 1, "pad": "' + b"x" * (10 << 20) + b'"}'
    _error(client.post(path, content=body, headers=AUTH), 413, "payload_too_large")


@pytest.mark.parametrize("path", POST_ROUTES, ids=_route_id)
def test_declared_oversize_body_is_413_without_reading_it(sidecar: Sidecar, path: str) -> None:
    headers = {**AUTH, "Content-Length": str(10 << 20)}
    response, consumed, _ = _streamed(sidecar.app, path, headers, stop_after=4 << 20)
    _error(response, 413, "payload_too_large")
    assert consumed <= MAX_BODY + CHUNK, f"{path}: app read {consumed} bytes before 413"


@pytest.mark.parametrize("path", BODY_ROUTES, ids=_route_id)
def test_chunked_body_streamed_past_the_limit_is_413(sidecar: Sidecar, path: str) -> None:
    response, consumed, _ = _streamed(sidecar.app, path, dict(AUTH), stop_after=4 << 20)
    _error(response, 413, "payload_too_large")
    assert consumed <= MAX_BODY + CHUNK, f"{path}: app read {consumed} bytes, limit {MAX_BODY}"


@pytest.mark.parametrize("path", POST_ROUTES, ids=_route_id)
def test_real_server_answers_413_for_a_declared_oversize_body(server: Server, path: str) -> None:
    head = _head(path, AUTH, f"Content-Length: {10 << 20}")
    status = _stalled(server.port, head, b"{" + b"x" * CHUNK)
    assert status == 413, f"{path}: got {status} (None: the server waited for the body)"


@pytest.mark.parametrize("path", BODY_ROUTES, ids=_route_id)
def test_real_server_answers_413_once_a_chunked_body_passes_the_limit(
    server: Server, path: str
) -> None:
    sent = b"".join(_chunk(b"x" * CHUNK) for _ in range(MAX_BODY // CHUNK + 2))
    status = _stalled(server.port, _head(path, AUTH, "Transfer-Encoding: chunked"), sent)
    assert status == 413, f"{path}: got {status} (None: the server waited for the body)"


def test_body_of_exactly_the_limit_is_accepted_one_more_byte_is_413(client: TestClient) -> None:
    body = b'{"account_id": "acme", "estimated_credits": 1}'
    at_limit = body + b" " * (MAX_BODY - len(body))
    response = client.post("/v1/check", content=at_limit, headers=AUTH)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["allowed"] is True
    _error(
        client.post("/v1/check", content=at_limit + b" ", headers=AUTH), 413, "payload_too_large"
    )


# -- deep JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BODY_ROUTES, ids=_route_id)
def test_json_nested_2000_deep_is_400(client: TestClient, path: str) -> None:
    bodies = [
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"account_id": "acme", "estimated_credits": 1, "amount": 1, "ttl_s": 5, "actual": 1, '
        b'"x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    ]
    for body in bodies:
        assert len(body) < MAX_BODY
        _error(client.post(path, content=body, headers=AUTH), 400, "invalid_json")


# -- identifiers ---------------------------------------------------------------------------


def test_account_id_limit_counts_utf8_bytes_not_characters(client: TestClient) -> None:
    fits = ["a" * 256, "é" * 128, "😀" * 64]  # 256 bytes each (256, 128, 64 characters)
    over = ["a" * 257, "é" * 129, "😀" * 65, "a" * 255 + "é"]  # 257..260 bytes, <= 256 chars
    for account in fits:
        response = _check(client, account)
        assert response.status_code == 200, (len(account), response.text[:200])
        assert response.json()["reason"] == "unknown_account"
    for account in over:
        _error(_check(client, account), 422, "invalid_request")
        _error(_reserve(client, account, 1), 422, "invalid_request")
        response = client.get(f"/v1/accounts/{account}/balance", headers=AUTH)
        _error(response, 422, "invalid_request")


@pytest.mark.parametrize("account", ["a{b}", "{", "}", "acme}", "{acme}"])
def test_account_id_with_braces_is_422_everywhere(client: TestClient, account: str) -> None:
    _error(_check(client, account), 422, "invalid_request")
    _error(_reserve(client, account, 1), 422, "invalid_request")
    _error(client.get(f"/v1/accounts/{account}/balance", headers=AUTH), 422, "invalid_request")
    hold = "a" * 32 + ":" + account
    _error(_commit(client, hold, 1), 422, "invalid_request")
    _error(_release(client, hold), 422, "invalid_request")


def test_feature_follows_the_identifier_rule(client: TestClient) -> None:
    for feature in ("a{b}", "x" * 257, "é" * 129, ""):
        _error(_check(client, "acme", feature=feature), 422, "invalid_request")
        _error(_reserve(client, "acme", 1, feature=feature), 422, "invalid_request")
    assert _check(client, "acme", feature="x" * 256).status_code == 200


def test_empty_account_id_is_422(client: TestClient) -> None:
    _error(_check(client, ""), 422, "invalid_request")
    _error(_reserve(client, "", 1), 422, "invalid_request")
    _error(_release(client, "a" * 32 + ":"), 422, "invalid_request")


def test_hold_id_account_part_follows_the_identifier_rule(client: TestClient) -> None:
    for account in ("x" * 257, "é" * 129, "a{b}"):
        hold = "b" * 32 + ":" + account
        _error(_commit(client, hold, 1), 422, "invalid_request")
        _error(_release(client, hold), 422, "invalid_request")
    # Within the rule, an unknown hold is simply not found.
    _error(_release(client, "b" * 32 + ":" + "é" * 128), 404, "hold_not_found")


def _raw_asgi(app: Starlette, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    """One request straight into the ASGI app (no client-side URL length limit)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": quote(path).encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"x-api-key", AUTH["X-API-Key"].encode()), (b"host", b"sidecar")],
        "client": ("127.0.0.1", 1),
        "server": ("sidecar", 80),
    }

    async def go() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(go())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)


def test_megabyte_account_id(client: TestClient, sidecar: Sidecar) -> None:
    huge = "a" * (1 << 20)
    # In the path (no body): the identifier rule.
    for method, path in (
        ("GET", f"/v1/accounts/{huge}/balance"),
        ("POST", f"/v1/reservations/{'c' * 32}:{huge}/release"),
    ):
        status, body = _raw_asgi(sidecar.app, method, path)
        assert (status, body["error"]) == (422, "invalid_request"), (method, status, body)
    # In a body it makes the body too large first.
    _error(_check(client, huge), 413, "payload_too_large")
    # Just under the body limit it is the identifier rule again.
    _error(_check(client, "a" * 60_000), 422, "invalid_request")


def test_control_characters_in_path_identifiers_reach_the_handler(client: TestClient) -> None:
    """A newline is allowed by the identifier rule, so it must not fall out of the routes
    (Starlette's ``path`` convertor is ``.*``, which does not match a newline)."""
    for account in ("a\nb", "\n", "a\r\nb"):
        quoted = quote(account, safe="")
        response = client.get(f"/v1/accounts/{quoted}/balance", headers=AUTH)
        _error(response, 404, "unknown_account")
        hold = "d" * 32 + ":" + quoted
        _error(_commit(client, hold, 1), 404, "hold_not_found")
        _error(_release(client, hold), 404, "hold_not_found")


def test_lone_surrogates_are_422_not_500(client: TestClient) -> None:
    for body in (
        b'{"account_id": "\\ud800", "estimated_credits": 1}',
        b'{"account_id": "acme", "estimated_credits": 1, "feature": "\\udfff"}',
        b'{"account_id": "\\udc00x", "amount": 1, "ttl_s": 5}',
        b'{"account_id": "acme", "amount": 1, "ttl_s": 5, "feature": "\\ud83d"}',
    ):
        path = "/v1/check" if b"estimated_credits" in body else "/v1/reservations"
        _error(client.post(path, content=body, headers=AUTH), 422, "invalid_request")


# -- unknown feature ---------------------------------------------------------------------------


def test_unknown_feature_is_denied(server: Server) -> None:
    """Through ``metering run sidecar`` (the production wiring reads the shipped price book:
    text_generation, image_generation, document_analysis, compute)."""
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=10) as http:

        def check(feature: str | None) -> dict[str, Any]:
            body = {"account_id": "allf", "estimated_credits": 1, "feature": feature}
            response = http.post("/v1/check", json=body)
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        decision = check("teleport")
        assert (decision["allowed"], decision["reason"]) == (False, "unknown_feature")
        assert decision["degraded"] is False
        for known in ("text_generation", "image_generation", "document_analysis", "compute"):
            assert check(known)["allowed"] is True, known
        assert check(None)["allowed"] is True


# -- holds ---------------------------------------------------------------------------------------


def test_reserve_is_201_with_a_hold_or_200_without(client: TestClient) -> None:
    held = _reserve(client, "acme", 6 * CREDIT)
    assert held.status_code == 201
    assert isinstance(held.json()["hold_id"], str) and held.json()["allowed"] is True
    denied = _reserve(client, "acme", 5 * CREDIT)
    assert denied.status_code == 200
    body = denied.json()
    assert (body["allowed"], body["reason"], body["hold_id"]) == (
        False,
        "insufficient_credits",
        None,
    )


def test_commit_answers_actual_committed_and_held_back(client: TestClient) -> None:
    hold_id = _hold(client, "acme", 2 * CREDIT)
    response = _commit(client, hold_id, CREDIT)
    assert response.status_code == 200
    assert response.json() == {
        "hold_id": hold_id,
        "status": "committed",
        "actual": CREDIT,
        "committed": CREDIT,
        "held_back": 0,
    }
    assert _balance(client, "acme")["reserved"] == CREDIT


def test_commit_is_idempotent(client: TestClient) -> None:
    hold_id = _hold(client, "acme", 2 * CREDIT)
    first = _commit(client, hold_id, 3 * CREDIT)
    assert first.status_code == 200
    reserved = _balance(client, "acme")["reserved"]
    for _ in range(3):
        again = _commit(client, hold_id, 3 * CREDIT)
        assert again.status_code == 200
        assert again.json() == first.json()
    assert _balance(client, "acme")["reserved"] == reserved


def test_commit_with_another_actual_is_409(client: TestClient) -> None:
    hold_id = _hold(client, "acme", 2 * CREDIT)
    assert _commit(client, hold_id, CREDIT).status_code == 200
    reserved = _balance(client, "acme")["reserved"]
    _error(_commit(client, hold_id, CREDIT + 1), 409, "hold_conflict")
    _error(_commit(client, hold_id, 0), 409, "hold_conflict")
    assert _balance(client, "acme")["reserved"] == reserved


def test_commit_after_release_is_409(client: TestClient) -> None:
    hold_id = _hold(client, "acme", 2 * CREDIT)
    assert _release(client, hold_id).status_code == 200
    _error(_commit(client, hold_id, CREDIT), 409, "hold_conflict")
    assert _balance(client, "acme")["reserved"] == 0


def test_release_is_idempotent(client: TestClient) -> None:
    hold_id = _hold(client, "acme", 2 * CREDIT)
    first = _release(client, hold_id)
    assert first.status_code == 200
    assert first.json() == {"hold_id": hold_id, "status": "released"}
    again = _release(client, hold_id)
    assert again.status_code == 200 and again.json() == first.json()
    assert _balance(client, "acme")["reserved"] == 0


def test_release_after_commit_is_409(client: TestClient) -> None:
    hold_id = _hold(client, "acme", 2 * CREDIT)
    assert _commit(client, hold_id, CREDIT).status_code == 200
    _error(_release(client, hold_id), 409, "hold_conflict")
    assert _balance(client, "acme")["reserved"] == CREDIT  # the commit still stands


def test_another_services_key_cannot_settle_a_hold(client: TestClient) -> None:
    hold_id = _hold(client, "acme", 2 * CREDIT, headers=AUTH_A)
    _error(_commit(client, hold_id, CREDIT, headers=AUTH), 404, "hold_not_found")
    _error(_release(client, hold_id, headers=AUTH), 404, "hold_not_found")
    bearer_b = {"Authorization": "Bearer key-b-secret"}
    _error(_commit(client, hold_id, CREDIT, headers=bearer_b), 404, "hold_not_found")
    assert _balance(client, "acme")["reserved"] == 2 * CREDIT  # untouched
    committed = _commit(client, hold_id, CREDIT, headers=AUTH_A)
    assert committed.status_code == 200 and committed.json()["committed"] == CREDIT


def test_unknown_and_expired_holds_are_404(client: TestClient) -> None:
    never = "e" * 32 + ":acme"
    _error(_commit(client, never, 1), 404, "hold_not_found")
    _error(_release(client, never), 404, "hold_not_found")
    body = {"account_id": "acme", "amount": CREDIT, "ttl_s": 0.05}
    response = client.post("/v1/reservations", json=body, headers=AUTH)
    assert response.status_code == 201
    expired = response.json()["hold_id"]
    time.sleep(0.3)
    _error(_commit(client, expired, 1), 404, "hold_not_found")
    _error(_release(client, expired), 404, "hold_not_found")
    assert _balance(client, "acme")["reserved"] == 0


@pytest.mark.parametrize("actual", [MAX_SAFE + 1, -1, 1.5, "1", True, None, [1]])
def test_commit_actual_out_of_range_or_not_an_integer_is_422(
    client: TestClient, actual: Any
) -> None:
    hold_id = _hold(client, "acme", CREDIT)
    _error(_commit(client, hold_id, actual), 422, "invalid_request")
    assert _balance(client, "acme")["reserved"] == CREDIT


@pytest.mark.parametrize(
    ("account", "can_spend"),
    [("acme", 10 * CREDIT - 3 * CREDIT), ("ovr", 10 * CREDIT + 5 * CREDIT - 3 * CREDIT)],
)
def test_commit_of_2_53_minus_1_is_capped_at_what_the_account_can_spend(
    client: TestClient, account: str, can_spend: int
) -> None:
    _hold(client, account, 3 * CREDIT)  # another reservation on the account
    hold_id = _hold(client, account, CREDIT)
    response = _commit(client, hold_id, MAX_SAFE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["actual"] == MAX_SAFE
    assert 0 <= body["committed"] <= can_spend
    assert body["held_back"] == MAX_SAFE - body["committed"]
    balance = _balance(client, account)
    assert balance["reserved"] == 3 * CREDIT + body["committed"]
    # Checks still answer normally.
    free = _check(client, account, 0)
    assert free.status_code == 200 and free.json()["allowed"] is True
    assert free.json()["reserved"] == balance["reserved"]
    more = _check(client, account, 16 * CREDIT)  # more than the account could ever spend
    assert more.status_code == 200
    assert (more.json()["allowed"], more.json()["reason"]) == (False, "insufficient_credits")
    # The same huge actual again is the same answer (idempotent), not a second cap.
    assert _commit(client, hold_id, MAX_SAFE).json() == body


def test_unlimited_account_under_huge_holds_and_commits_never_5xx(client: TestClient) -> None:
    """An unlimited account has no cap on holds; 1,100 holds of 2^53-1 would overflow a 64-bit
    ``reserved`` counter (2^63 / 2^53 = 1024). Every answer must still be a 2xx/4xx, and the
    account must keep answering."""
    for i in range(1_100):
        response = _reserve(client, "unl", MAX_SAFE)
        assert response.status_code < 500, (i, response.text[:200])
        if response.status_code == 201 and i % 2:
            commit = _commit(client, response.json()["hold_id"], MAX_SAFE)
            assert commit.status_code < 500, (i, commit.text[:200])
    response = _check(client, "unl", 1)
    assert response.status_code == 200
    assert 0 <= response.json()["reserved"] <= MAX_SAFE, "reserved past the exact-integer range"
    assert client.get("/v1/accounts/unl/balance", headers=AUTH).status_code == 200


# -- degraded ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(FailMode))
def test_degraded_reserve_is_200_without_a_hold_and_spendable_0(mode: FailMode) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    app = Sidecar(closed, "dg:", KEYS, mode, redis_timeout_s=0.2).app
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(3):  # also after the breaker opens
            response = _reserve(client, "acme", 1)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["degraded"] is True
            assert body["hold_id"] is None
            assert body["spendable"] == 0
            check = _check(client, "acme", 1)
            assert check.status_code == 200 and check.json()["degraded"] is True
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["breaker"] in {"closed", "open", "half_open"}


def test_degraded_reserve_after_redis_stops_with_a_learned_allow_policy(
    ledger: type[LedgerBuilder],
) -> None:
    with LocalRedis() as server:
        seed = redis.Redis.from_url(server.url)
        alw = ledger("alw")
        Projector(seed, "dg:").apply_batch([alw.plan("allow", limit=9), alw.grant("g", 5)])
        seed.close()
        app = Sidecar(server.url, "dg:", KEYS, FailMode.AUTO, redis_timeout_s=0.2).app
        with TestClient(app, raise_server_exceptions=False) as client:
            assert _check(client, "alw", 1).json()["allowed"] is True  # learns "allow"
            server.stop()
            response = _reserve(client, "alw", 1)
            assert response.status_code == 200, response.text  # never 201 when degraded
            body = response.json()
            assert body["degraded"] is True and body["hold_id"] is None
            assert body["spendable"] == 0


def test_healthz_reports_the_breaker(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["breaker"] == "closed"


# -- never a 5xx -----------------------------------------------------------------------------------


HOSTILE_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"x"',
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}",
    b'{"account_id": "acme", "estimated_credits": NaN}',
    b'{"account_id": "acme", "estimated_credits": Infinity}',
    b'{"account_id": "acme", "estimated_credits": 1e400}',
    b'{"account_id": "acme", "estimated_credits": ' + b"9" * 5000 + b"}",
    b'{"account_id": "acme", "amount": 1, "ttl_s": NaN}',
    b'{"account_id": "acme", "amount": 1, "ttl_s": 1e-300}',
    b'{"account_id": "acme", "amount": 1, "ttl_s": -Infinity}',
    b'{"account_id": "acme", "estimated_credits": 1, "account_id": {"$gt": ""}}',
    b'{"account_id": "\\u0000", "estimated_credits": 1, "amount": 1, "ttl_s": 1}',
    b'{"account_id": ["acme"], "estimated_credits": [1]}',
    b'{"actual": 1, "actual": -1}',
    b'{"actual": 9007199254740991.0}',
]


@pytest.mark.parametrize("path", POST_ROUTES, ids=_route_id)
def test_hostile_bodies_never_get_a_5xx(client: TestClient, path: str) -> None:
    for body in HOSTILE_BODIES:
        response = client.post(path, content=body, headers=AUTH)
        assert response.status_code < 500, (body[:60], response.status_code, response.text[:200])
        assert response.headers["content-type"].startswith("application/json")


# -- memory ------------------------------------------------------------------------------------


def _rss_growth(server: Server, send: Callable[[int], None], n: int, abort_at: int) -> int:
    for i in range(10):  # warm up allocator arenas and connection handling
        send(-1 - i)
    start = server.rss_bytes()
    peak = start
    for i in range(n):
        send(i)
        if i % 10 == 9:
            peak = max(peak, server.rss_bytes())
            if peak - start > abort_at:
                break
    return max(peak, server.rss_bytes()) - start


def test_distinct_megabyte_ids_do_not_grow_memory(server: Server) -> None:
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=10) as http:

        def send(i: int) -> None:
            account = f"{i:08d}" + "m" * ((1 << 20) - 8)
            body = {"account_id": account, "estimated_credits": 1}
            try:
                status = http.post("/v1/check", json=body).status_code
            except httpx.TransportError:
                return  # the server hung up on the oversized body: fine
            assert status < 500, status  # 413 expected; the status has its own tests

        growth = _rss_growth(server, send, 100, abort_at=128 << 20)
    assert growth < 32 << 20, f"RSS grew by {growth >> 20} MB over 100 distinct 1 MB ids"


def test_distinct_oversize_ids_under_the_body_limit_do_not_grow_memory(server: Server) -> None:
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=10) as http:

        def send(i: int) -> None:
            account = f"{i:08d}" + "k" * 60_000
            response = http.post("/v1/check", json={"account_id": account, "estimated_credits": 1})
            assert response.status_code < 500, response.status_code  # 422 expected
            response = http.get(f"/v1/accounts/{account}/balance")
            assert response.status_code < 500, response.status_code  # 422 expected

        growth = _rss_growth(server, send, 200, abort_at=128 << 20)
    assert growth < 24 << 20, f"RSS grew by {growth >> 20} MB over 200 distinct 60 KB ids"
