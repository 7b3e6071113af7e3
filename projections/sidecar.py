"""HTTP sidecar over the enforcement library (Starlette under uvicorn).

Products that are not in Python, or do not want a Redis client, ask this process. It
authenticates each calling service by API key (constant-time compare), validates input
into 4xx JSON errors, and when Redis is unreachable answers per its fail mode instead of
failing the request path.

Its parts, one job each: request bodies and their rules (``requests``), the hot path for
``POST /v1/check`` (``fast_check``), every Redis call under a deadline and a circuit breaker
(``redis_guard``), the hold ids that prove their service (``hold_owners``), the answers without
Redis (``failmode``). This module wires them into the Starlette app and its routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    RedisError,
)
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metering.auth import key_owner, presented_key
from metering.domain.identifiers import is_identifier
from metering.metrics import CONTENT_TYPE, Metric, counter, exposition, gauge
from projections.breaker import BreakerState, CircuitBreaker
from projections.enforcement import (
    UNKNOWN_FEATURE_DECISION,
    AsyncEnforcer,
    Decision,
    EnforcementError,
    FeatureSet,
    HoldConflict,
    new_hold_id,
)
from projections.failmode import FailMode, PolicyCache, degraded_decision
from projections.fast_check import FastCheck
from projections.features import FeatureCatalog
from projections.hold_owners import HoldOwners
from projections.keys import account_from_key, balance_pattern, hold_account
from projections.openapi import SPEC
from projections.redis_connect import (
    CONNECTION_FAILURES,
    AsyncRedis,
    aconnect_cluster,
    is_cluster_url,
    keep_slot_map_fresh,
    refresh_async_slot_map,
)
from projections.redis_guard import RedisGuard, RedisUnavailable
from projections.requests import (
    BadRequest,
    CheckRequest,
    CommitRequest,
    ReserveRequest,
    error_response,
    identifier,
    parse_object,
    read_limited,
)
from projections.warm import warm

log = logging.getLogger("metering.sidecar")

_RELEASE_RETRIED: tuple[type[Exception], ...] = (*CONNECTION_FAILURES, EnforcementError)
"""What a background release retries on."""

DEFAULT_DEADLINE_S = 0.03
"""How long a request waits for Redis before it is answered by the fail mode. A healthy local
Redis answers in well under a millisecond; a hung one must not make every request slow. When
the breaker opens, every request still waiting is answered at once (not at its deadline)."""

T = TypeVar("T")
Handler = Callable[[Request, str], Awaitable[Response]]


class _IdentifierConvertor(Convertor[str]):
    """Path identifiers: anything, newlines included (Starlette's ``path`` stops at one, which
    turned a valid id into a routing 404); the handlers apply the identifier rule."""

    regex = "[\\s\\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", _IdentifierConvertor())


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


class Sidecar:
    """The app's state and handlers; ``app`` is the Starlette application."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        api_keys: Mapping[str, str],
        fail_mode: FailMode = FailMode.AUTO,
        *,
        unseen: FailMode = FailMode.CLOSED,
        features: FeatureSet | None = None,
        redis_timeout_s: float = 0.5,
        deadline_s: float = DEFAULT_DEADLINE_S,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not api_keys:
            raise ValueError("at least one API key is required (METERING_API_KEYS)")
        self.redis_url = redis_url
        self.prefix = prefix
        self.fail_mode = fail_mode
        self.unseen = unseen
        self.features = features
        self.policies = PolicyCache()
        self.redis_timeout_s = redis_timeout_s
        self.deadline_s = deadline_s
        self.guard = RedisGuard(deadline_s, breaker or CircuitBreaker(), fail_mode.value)
        self.degraded_answers = 0
        self._keys = [(service, key.encode("utf-8")) for service, key in api_keys.items()]
        self.owners = HoldOwners(self._keys)
        self.client: AsyncRedis | None = None
        self.enforcer: AsyncEnforcer | None = None
        self._warmup: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        """Holds being released in the background (kept referenced until done)."""
        self.app = Starlette(
            routes=[
                Route("/v1/check", self._authed(self.check), methods=["POST"]),
                Route("/v1/reservations", self._authed(self.reserve), methods=["POST"]),
                Route(
                    "/v1/reservations/{hold_id:id}/commit",
                    self._authed(self.commit),
                    methods=["POST"],
                ),
                Route(
                    "/v1/reservations/{hold_id:id}/release",
                    self._authed(self.release),
                    methods=["POST"],
                ),
                Route(
                    "/v1/accounts/{account_id:id}/balance",
                    self._authed(self.balance),
                    methods=["GET"],
                ),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/healthz", self.health, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},
            lifespan=self._lifespan,
            middleware=[Middleware(FastCheck, sidecar=self)],
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Blocking pool: a burst waits for a connection instead of failing; no retries, so
        # an unreachable Redis turns into the fail-mode answer within the deadline. Every
        # socket wait is bounded by the deadline too, not only each call: redis-py also waits
        # on its own (a close after a cut call, a connect handshake), and against a hung Redis
        # such a wait lasted its full timeout. A connect must fit in the deadline.
        # A cluster client keeps connections per node (up to 256 each; beyond, a call fails
        # at once and is answered by the fail mode) and follows redirects itself; during a
        # failover answers follow the fail mode until the slot map is new.
        bound = min(self.redis_timeout_s, self.deadline_s)
        timeouts: dict[str, Any] = {
            "socket_timeout": bound,
            "socket_connect_timeout": bound,
            "retry": Retry(NoBackoff(), 0),
        }
        pool = slot_map = None
        if is_cluster_url(self.redis_url):
            cluster = aconnect_cluster(self.redis_url, max_connections=256, **timeouts)
            self.client = cluster
            error = await refresh_async_slot_map(cluster)  # before the first request
            if error is not None:
                log.warning("redis cluster not reachable at start (%s)", error)
            slot_map = asyncio.create_task(keep_slot_map_fresh(cluster, log))
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.redis_url, max_connections=64, timeout=bound, **timeouts
            )
            self.client = aioredis.Redis(connection_pool=pool)
        await warm(self.client, pool)  # scripts and connections ready for the first burst
        self.enforcer = AsyncEnforcer(self.client, self.prefix, features=self.features)
        if self.fail_mode is FailMode.AUTO:
            self._warmup = asyncio.create_task(self._learn_policies())
        watcher = None
        if isinstance(self.features, FeatureCatalog) and self.features.path is not None:
            watcher = asyncio.create_task(self._watch_features(self.features))
        try:
            yield
        finally:
            if self._warmup is not None:
                self._warmup.cancel()
            for task in (watcher, slot_map):
                if task is not None:
                    task.cancel()
            await self.client.aclose()
            if pool is not None:
                await pool.disconnect()

    @staticmethod
    async def _watch_features(catalog: FeatureCatalog, interval_s: float = 2.0) -> None:
        """Re-read the price book's features when its file changes, in a worker thread."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(catalog.maybe_reload)

    async def _learn_policies(self, retry_s: float = 5.0) -> None:
        """Learn every account's overage policy once Redis answers, so ``auto`` answers by
        policy (not the unseen default) for accounts this process has not served yet."""
        client = self.client
        assert client is not None
        while True:
            try:
                async for key in client.scan_iter(match=balance_pattern(self.prefix), count=500):
                    text = key.decode() if isinstance(key, bytes) else str(key)
                    account = account_from_key(self.prefix, text)
                    if account is None or not is_identifier(account):
                        continue
                    policy = await client.hget(key, "policy")
                    if isinstance(policy, bytes):
                        self.policies.remember(account, policy.decode())
                    if self.policies.bytes >= 0.9 * self.policies.max_bytes:
                        return  # full: more would only evict what was just learned
                log.info("learned the overage policy of %d accounts", len(self.policies))
                return
            except (RedisError, OSError) as exc:
                log.info("policy warm-up waits for redis (%s)", type(exc).__name__)
                await asyncio.sleep(retry_s)

    # -- plumbing -------------------------------------------------------------------------

    def service_for(self, api_key: str | None, authorization: str | None) -> str | None:
        """The service an ``X-API-Key`` or ``Authorization: Bearer`` value belongs to."""
        return key_owner(presented_key(api_key, authorization), self._keys)

    def _authed(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """The key is checked first, from the headers: no body is read for a caller without
        one. Bad input becomes 4xx here, an unreachable Redis 503."""

        async def wrapped(request: Request) -> Response:
            service = self.service_for(
                request.headers.get("x-api-key"), request.headers.get("authorization")
            )
            if service is None:
                return error_response(
                    401,
                    "unauthorized",
                    "missing or wrong API key (X-API-Key or Authorization: Bearer)",
                    {"WWW-Authenticate": "Bearer"},
                )
            try:
                return await handler(request, service)
            except BadRequest as exc:
                return error_response(exc.status, exc.error, exc.message)
            except HoldConflict as exc:
                return error_response(409, "hold_conflict", str(exc))
            except EnforcementError as exc:
                return error_response(422, "invalid_request", str(exc))
            except RedisUnavailable:
                return error_response(
                    503, "redis_unavailable", "the balance store is unreachable; retry"
                )
            except ClientDisconnect:
                return error_response(400, "client_disconnected", "the request body did not arrive")

        return wrapped

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await read_limited(request.stream(), request.headers.get("content-length"))
        return parse_object(raw)

    @property
    def breaker(self) -> CircuitBreaker:
        return self.guard.breaker

    @breaker.setter
    def breaker(self, breaker: CircuitBreaker) -> None:
        self.guard.breaker = breaker

    def _enforcer(self) -> AsyncEnforcer:
        if self.enforcer is None:
            raise RuntimeError("sidecar used outside its lifespan")
        return self.enforcer

    def _release_later(self, hold_id: str, attempts: int = 10) -> None:
        """Release ``hold_id`` in the background, retrying while Redis is unreachable (a hold
        that was never made is a no-op; the hold's own TTL is the last resort)."""
        enforcer = self._enforcer()

        async def release() -> None:
            for attempt in range(attempts):
                try:
                    async with asyncio.timeout(self.redis_timeout_s):
                        await enforcer.release(hold_id)
                    return
                except _RELEASE_RETRIED:
                    await asyncio.sleep(min(2.0**attempt * 0.1, 5.0))

        task = asyncio.get_running_loop().create_task(release())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _degraded(self, account: str) -> Decision:
        self.degraded_answers += 1
        return degraded_decision(self.fail_mode, self.policies, account, self.unseen)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, "http_error", str(exc.detail))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal_error", "unexpected error; see sidecar log")

    # -- endpoints ------------------------------------------------------------------------

    async def check(self, request: Request, service: str) -> Response:
        asked = CheckRequest.parse(await self._body(request))
        decision = await self.decide_check(asked.account_id, asked.feature, asked.estimated_credits)
        return JSONResponse(decision.to_json())

    async def decide_check(self, account: str, feature: str | None, cost: int) -> Decision:
        """The check, or the fail-mode answer when Redis is unreachable (both paths use it).
        The arguments are already valid (the route and :class:`FastCheck` check them)."""
        enforcer = self._enforcer()
        if enforcer.unknown_feature(feature):  # decided without Redis: never a breaker probe
            return UNKNOWN_FEATURE_DECISION
        try:
            decision = await self.guard.call(lambda: enforcer.check(account, feature, cost))
        except RedisUnavailable:
            return self._degraded(account)
        if decision.policy and self.fail_mode is FailMode.AUTO:
            self.policies.remember(account, decision.policy)
        return decision

    async def reserve(self, request: Request, service: str) -> Response:
        asked = ReserveRequest.parse(await self._body(request))
        account, amount, ttl_s, feature = asked.account_id, asked.amount, asked.ttl_s, asked.feature
        enforcer = self._enforcer()
        if enforcer.unknown_feature(feature):
            return JSONResponse(UNKNOWN_FEATURE_DECISION.to_json(), 200)
        hold_id = new_hold_id(account, self.owners.token(service))
        try:
            decision = await self.guard.call(
                lambda: enforcer.try_reserve(account, amount, ttl_s, feature, hold_id=hold_id)
            )
        except RedisUnavailable:
            # The script may have run before the answer was cut: its hold must not stay
            # reserved with an id nobody got. Release it once Redis answers.
            self._release_later(hold_id)
            return JSONResponse(self._degraded(account).to_json(), 200)  # no hold for you
        if decision.policy and self.fail_mode is FailMode.AUTO:
            self.policies.remember(account, decision.policy)
        return JSONResponse(decision.to_json(), 201 if decision.allowed else 200)

    def _owned_hold(self, request: Request, service: str) -> str:
        """The path's hold id when ``service`` made it; 422 if malformed, 404 if not its own."""
        hold_id: str = request.path_params["hold_id"]
        try:
            hold_account(hold_id)
        except ValueError as exc:
            raise BadRequest(422, "invalid_request", str(exc)) from None
        if not self.owners.owns(service, hold_id):
            raise BadRequest(404, "hold_not_found", "no such hold for this API key")
        return hold_id

    async def commit(self, request: Request, service: str) -> Response:
        actual = CommitRequest.parse(await self._body(request)).actual
        hold_id = self._owned_hold(request, service)
        enforcer = self._enforcer()
        settled = await self.guard.call(lambda: enforcer.commit(hold_id, actual))
        if settled is None:
            return error_response(404, "hold_not_found", "hold expired or never existed")
        return JSONResponse(settled.to_json())

    async def release(self, request: Request, service: str) -> Response:
        await read_limited(request.stream(), request.headers.get("content-length"))  # unused
        hold_id = self._owned_hold(request, service)
        enforcer = self._enforcer()
        if not await self.guard.call(lambda: enforcer.release(hold_id)):
            return error_response(404, "hold_not_found", "hold expired or never existed")
        return JSONResponse({"hold_id": hold_id, "status": "released"})

    async def balance(self, request: Request, service: str) -> Response:
        account = identifier("account_id", request.path_params["account_id"])
        enforcer = self._enforcer()
        balance = await self.guard.call(lambda: enforcer.balance(account))
        if balance is None:
            return error_response(404, "unknown_account", f"no projection for account {account!r}")
        if self.fail_mode is FailMode.AUTO:
            self.policies.remember(account, balance.policy)
        return JSONResponse(balance.to_json())

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(SPEC)

    async def health(self, request: Request) -> Response:
        ok = False
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                async with asyncio.timeout(self.redis_timeout_s):
                    ok = bool(await self.client.ping())
        body = {
            "status": "ok" if ok else "degraded",
            "redis": ok,
            "fail_mode": self.fail_mode.value,
            "breaker": self.breaker.state.value,
        }
        return JSONResponse(body, 200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(exposition(self._families), media_type=CONTENT_TYPE)

    def _families(self) -> list[Metric]:
        state = self.breaker.state
        p = "metering_sidecar_"
        return [
            gauge(
                p + "breaker_state",
                "1 for the circuit breaker's current state.",
                {(s.value,): int(s is state) for s in BreakerState},
                ["state"],
            ),
            counter(
                p + "breaker_opened_total", "Times the breaker opened.", self.breaker.opened_total
            ),
            counter(
                p + "redis_failures_total",
                "Redis calls that timed out or failed.",
                self.guard.failures,
            ),
            counter(
                p + "degraded_answers_total",
                "Answers given by the fail mode.",
                self.degraded_answers,
            ),
            gauge(
                p + "policy_cache_bytes", "Estimated size of the policy cache.", self.policies.bytes
            ),
        ]
