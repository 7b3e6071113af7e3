"""HTTP sidecar over the enforcement library (Starlette under uvicorn).

Products that are not in Python, or do not want a Redis client, ask this process. It
authenticates each calling service by API key (constant-time compare), validates input
into 4xx JSON errors, and when Redis is unreachable answers per its fail mode instead of
failing the request path.

``POST /v1/check`` is the hot path: a pure-ASGI middleware (:class:`FastCheck`) answers a
well-formed, authorized check straight from the ASGI scope, skipping routing and the
Request/Response objects (about a third of the per-request CPU). Anything else - a bad key,
bad JSON, a bad field - is handed, body replayed, to the regular route, so every error
answer comes from one place.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metering.auth import key_owner
from projections.enforcement import AsyncEnforcer, Decision, EnforcementError
from projections.failmode import FailMode, PolicyCache, degraded_decision
from projections.keys import prefix_from_env
from projections.openapi import SPEC

log = logging.getLogger("metering.sidecar")

Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def parse_api_keys(value: str) -> dict[str, str]:
    """``svcA:key1,svcB:key2`` -> {service: key}; empty keys or names are an error."""
    keys: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        service, sep, key = item.partition(":")
        if not sep or not service.strip() or not key.strip():
            raise ValueError("METERING_API_KEYS: expected service:key[,service:key...]")
        keys[service.strip()] = key.strip()
    return keys


def _error(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse({"error": error, "message": message}, status, headers=headers)


class Sidecar:
    """The app's state and handlers; ``app`` is the Starlette application."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        api_keys: Mapping[str, str],
        fail_mode: FailMode = FailMode.AUTO,
        *,
        redis_timeout_s: float = 0.5,
    ) -> None:
        if not api_keys:
            raise ValueError("at least one API key is required (METERING_API_KEYS)")
        self.redis_url = redis_url
        self.prefix = prefix
        self.fail_mode = fail_mode
        self.policies = PolicyCache()
        self.redis_timeout_s = redis_timeout_s
        self._keys = [(service, key.encode("utf-8")) for service, key in api_keys.items()]
        self.client: aioredis.Redis | None = None
        self.enforcer: AsyncEnforcer | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/check", self._authed(self.check), methods=["POST"]),
                Route("/v1/reservations", self._authed(self.reserve), methods=["POST"]),
                Route(
                    "/v1/reservations/{hold_id:path}/commit",
                    self._authed(self.commit),
                    methods=["POST"],
                ),
                Route(
                    "/v1/reservations/{hold_id:path}/release",
                    self._authed(self.release),
                    methods=["POST"],
                ),
                Route(
                    "/v1/accounts/{account_id:path}/balance",
                    self._authed(self.balance),
                    methods=["GET"],
                ),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/healthz", self.health, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},
            lifespan=self._lifespan,
            middleware=[Middleware(FastCheck, sidecar=self)],
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Blocking pool: a burst waits for a connection instead of failing; no retries, so
        # an unreachable Redis turns into the fail-mode answer within redis_timeout_s.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=64,
            timeout=self.redis_timeout_s,
            socket_timeout=self.redis_timeout_s,
            socket_connect_timeout=self.redis_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self.enforcer = AsyncEnforcer(self.client, self.prefix)
        try:
            yield
        finally:
            await self.client.aclose()
            await pool.disconnect()

    # -- plumbing -------------------------------------------------------------------------

    def _service(self, request: Request) -> str | None:
        """The calling service, or None. Every key is compared, each in constant time."""
        return self.service_for(
            request.headers.get("x-api-key"), request.headers.get("authorization")
        )

    def service_for(self, api_key: str | None, authorization: str | None) -> str | None:
        """The service an ``X-API-Key`` or ``Authorization: Bearer`` value belongs to."""
        presented = api_key
        if presented is None:
            scheme, _, token = (authorization or "").partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
        return key_owner(presented, self._keys)

    def _authed(self, handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            if self._service(request) is None:
                return _error(
                    401,
                    "unauthorized",
                    "missing or wrong API key (X-API-Key or Authorization: Bearer)",
                    {"WWW-Authenticate": "Bearer"},
                )
            try:
                return await handler(request)
            except BadRequest as exc:
                return _error(exc.status, exc.error, exc.message)
            except EnforcementError as exc:
                return _error(422, "invalid_request", str(exc))

        return wrapped

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            raise BadRequest(400, "invalid_json", "request body must be a JSON object")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "invalid_json", "request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest(400, "invalid_json", "request body must be a JSON object")
        return data

    @staticmethod
    def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
        if name not in data:
            raise BadRequest(422, "invalid_request", f"missing field {name!r}")
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BadRequest(422, "invalid_request", f"field {name!r} has the wrong type")
        return value

    def _optional_feature(self, data: Mapping[str, Any]) -> str | None:
        value = data.get("feature")
        if value is not None and not isinstance(value, str):
            raise BadRequest(422, "invalid_request", "field 'feature' must be a string or null")
        return value

    def _enforcer(self) -> AsyncEnforcer:
        if self.enforcer is None:
            raise RuntimeError("sidecar used outside its lifespan")
        return self.enforcer

    def _remember(self, account: str, decision: Decision) -> None:
        if decision.policy and self.fail_mode is FailMode.AUTO:
            self.policies.remember(account, decision.policy)

    def _unavailable(self, exc: Exception) -> Response:
        log.warning("redis unavailable: %s", exc)
        return _error(503, "redis_unavailable", "the balance store is unreachable; retry")

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, "http_error", str(exc.detail))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal_error", "unexpected error; see sidecar log")

    # -- endpoints ------------------------------------------------------------------------

    async def check(self, request: Request) -> Response:
        data = await self._body(request)
        account = self._field(data, "account_id", str)
        cost = self._field(data, "estimated_credits", int)
        feature = self._optional_feature(data)
        return JSONResponse((await self.decide_check(account, feature, cost)).to_json())

    async def decide_check(self, account: str, feature: str | None, cost: int) -> Decision:
        """The check, or the fail-mode answer when Redis is unreachable (both paths use it)."""
        try:
            decision = await self._enforcer().check(account, feature, cost)
        except (RedisError, OSError) as exc:
            if isinstance(exc, ResponseError):
                raise
            log.warning("redis unavailable, fail mode %s: %s", self.fail_mode.value, exc)
            return degraded_decision(self.fail_mode, self.policies, account)
        self._remember(account, decision)
        return decision

    async def reserve(self, request: Request) -> Response:
        data = await self._body(request)
        account = self._field(data, "account_id", str)
        amount = self._field(data, "amount", int)
        ttl_s = self._field(data, "ttl_s", (int, float))
        feature = self._optional_feature(data)
        try:
            decision = await self._enforcer().try_reserve(account, amount, ttl_s, feature)
        except (RedisError, OSError) as exc:
            if isinstance(exc, ResponseError):
                raise
            log.warning("redis unavailable, fail mode %s: %s", self.fail_mode.value, exc)
            decision = degraded_decision(self.fail_mode, self.policies, account)
            return JSONResponse(decision.to_json(), 201 if decision.allowed else 200)
        self._remember(account, decision)
        return JSONResponse(decision.to_json(), 201 if decision.allowed else 200)

    async def commit(self, request: Request) -> Response:
        hold_id = request.path_params["hold_id"]
        data = await self._body(request)
        actual = self._field(data, "actual", int)
        return await self._settle(hold_id, "committed", self._enforcer().commit(hold_id, actual))

    async def release(self, request: Request) -> Response:
        hold_id = request.path_params["hold_id"]
        return await self._settle(hold_id, "released", self._enforcer().release(hold_id))

    async def _settle(self, hold_id: str, status: str, settling: Awaitable[bool]) -> Response:
        """Await a commit or release; a vanished hold is 404, an unreachable Redis 503."""
        try:
            found = await settling
        except (RedisError, OSError) as exc:
            if isinstance(exc, ResponseError):
                raise
            return self._unavailable(exc)
        if not found:
            return _error(404, "hold_not_found", "hold expired or already settled")
        return JSONResponse({"hold_id": hold_id, "status": status})

    async def balance(self, request: Request) -> Response:
        account = request.path_params["account_id"]
        try:
            balance = await self._enforcer().balance(account)
        except (RedisError, OSError) as exc:
            if isinstance(exc, ResponseError):
                raise
            return self._unavailable(exc)
        if balance is None:
            return _error(404, "unknown_account", f"no projection for account {account!r}")
        if self.fail_mode is FailMode.AUTO:
            self.policies.remember(account, balance.policy)
        return JSONResponse(balance.to_json())

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(SPEC)

    async def health(self, request: Request) -> Response:
        ok = False
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                ok = bool(await self.client.ping())
        body = {
            "status": "ok" if ok else "degraded",
            "redis": ok,
            "fail_mode": self.fail_mode.value,
        }
        return JSONResponse(body, 200 if ok else 503)


_JSON_HEADERS = [(b"content-type", b"application/json")]
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class FastCheck:
    """Pure-ASGI middleware: answers a valid, authorized ``POST /v1/check`` directly.

    The answer is byte-for-byte what the route would send (same JSON rendering). Anything
    it does not fully accept goes to the wrapped app with the body replayed, so error
    answers and every other endpoint stay with the Starlette routes.
    """

    def __init__(self, app: ASGIApp, sidecar: Sidecar) -> None:
        self.app = app
        self.sidecar = sidecar

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/check" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        api_key: str | None = None
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away: let Starlette see it
                await self.app(scope, _replay(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        request = self._parse(body) if self.sidecar.service_for(api_key, authorization) else None
        if request is None:
            await self.app(scope, _replay(whole, receive), send)
            return
        try:
            decision = await self.sidecar.decide_check(*request)
        except EnforcementError:
            await self.app(scope, _replay(whole, receive), send)
            return
        payload = _dumps(decision.to_json()).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _parse(body: bytes) -> tuple[str, str | None, int] | None:
        """(account, feature, cost) when the body is exactly what the route accepts."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        account = data.get("account_id")
        cost = data.get("estimated_credits")
        feature = data.get("feature")
        if (
            not isinstance(account, str)
            or not isinstance(cost, int)
            or isinstance(cost, bool)
            or (feature is not None and not isinstance(feature, str))
        ):
            return None
        return account, feature, cost


def _replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that yields ``first`` (the body already read), then the real messages."""
    pending = [first]

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def app_from_env(env: Mapping[str, str] | None = None) -> Starlette:
    """Build the app from ``METERING_*`` variables (what ``metering run sidecar`` does)."""
    from metering.config import load_settings

    env = os.environ if env is None else env
    settings = load_settings(env)
    keys = parse_api_keys(env.get("METERING_API_KEYS", ""))
    mode = FailMode.parse(env.get("METERING_FAIL_MODE", "auto"))
    return Sidecar(settings.redis_url, prefix_from_env(), keys, mode).app


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="metering run sidecar", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("METERING_SIDECAR_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("METERING_SIDECAR_PORT", "8088"))
    )
    parser.add_argument("--fail-mode", choices=[m.value for m in FailMode], default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    env = dict(os.environ)
    if args.fail_mode:
        env["METERING_FAIL_MODE"] = args.fail_mode
    try:
        app = app_from_env(env)
    except ValueError as exc:
        print(f"metering run sidecar: {exc}", flush=True)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
