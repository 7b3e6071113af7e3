"""The HTTP service: the sidecar's balance API plus the account page and its JSON API.

Built by composition: :class:`projections.sidecar.Sidecar` makes the app (its routes, its
Redis lifespan, its service keys), and this module appends the page's routes to that same
router, so one process and one port serve both. The page's API has its own keys
(:mod:`accountpage.access`): an account key sees one account, the admin key every account.

Routes added:
- ``GET /account`` (+ ``/account/static/*``): the page (static, holds no data; the key is
  read from the URL fragment ``#key=...`` or a form, and sent as ``X-API-Key``).
- ``GET /v1/me``: which accounts the key may see.
- ``GET /v1/accounts/{id}/overview``: balance, grants, renewal, limits, overage (Redis).
- ``GET /v1/accounts/{id}/usage``: usage by subject/feature, burn-down and the 7-day pace
  (ClickHouse), with the runway of the balance at that pace.
- ``POST /v1/admin/query`` (when given a :class:`accountpage.relay.QueryRelay`): read-only SQL
  for the CLI while this process holds the embedded ClickHouse path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from accountpage.access import AccessControl, Viewer
from accountpage.relay import QueryRelay
from accountpage.usage import usage_report
from metering.auth import presented_key
from metering.domain.identifiers import identifier_problem
from projections.balance import Balance
from projections.failmode import FailMode
from projections.keys import account_from_key, balance_pattern
from projections.redis_guard import RedisUnavailable
from projections.sidecar import Sidecar

log = logging.getLogger("accountpage")
STATIC_DIR = Path(__file__).with_name("static")
MAX_LISTED_ACCOUNTS = 1000

ClientFactory = Callable[[], Client]


def _error(status: int, error: str, message: str) -> Response:
    return JSONResponse({"error": error, "message": message}, status)


@dataclass
class AccountPage:
    """Handlers of the page's routes; reads Redis through the sidecar's client."""

    sidecar: Sidecar
    access: AccessControl
    clickhouse: ClientFactory

    def __post_init__(self) -> None:
        # One reader client, one query at a time: a clickhouse-connect client (HTTP session
        # or chDB handle) must not run two queries at once.
        self._read_lock = threading.Lock()

    def _usage_report(self, account: str, balance: Balance) -> dict[str, Any]:
        with self._read_lock:
            report = usage_report(
                self.clickhouse(), account, balance.period_start, balance.period_end, now_ms()
            )
        body = report.to_json()
        # The runway joins Redis's balance (read just before) with ClickHouse's 7-day pace.
        body["runway"] = report.runway(balance.available).to_json()
        return body

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/account", self.page, methods=["GET"]),
            Mount("/account/static", app=StaticFiles(directory=STATIC_DIR), name="account-static"),
            Route("/v1/me", self._authed(self.me), methods=["GET"]),
            Route(
                "/v1/accounts/{account_id:id}/overview",
                self._account(self.overview),
                methods=["GET"],
            ),
            Route("/v1/accounts/{account_id:id}/usage", self._account(self.usage), methods=["GET"]),
        ]

    # -- auth -----------------------------------------------------------------------------

    def _viewer(self, request: Request) -> Viewer | None:
        headers = request.headers
        return self.access.viewer(
            presented_key(headers.get("x-api-key"), headers.get("authorization"))
        )

    def _authed(
        self, handler: Callable[[Request, Viewer], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            viewer = self._viewer(request)
            if viewer is None:
                return _error(401, "unauthorized", "missing or wrong account key")
            try:
                return await handler(request, viewer)
            except (RedisUnavailable, RedisError, OSError):
                # No address or exception text: the caller needs to know to retry, not where
                # the store lives.
                return _error(503, "redis_unavailable", "the balance store is unreachable; retry")

        return wrapped

    def _account(
        self, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request, viewer: Viewer) -> Response:
            account = request.path_params["account_id"]
            problem = identifier_problem(account)
            if problem is not None:
                return _error(422, "invalid_request", f"account_id {problem}")
            if not viewer.may_see(account):
                # 404, not 403: a key must not learn which other accounts exist.
                return _error(404, "unknown_account", f"no account {account!r} for this key")
            return await handler(request, account)

        return self._authed(wrapped)

    # -- handlers ---------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/account")

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "account.html", headers={"Cache-Control": "no-store"})

    async def me(self, request: Request, viewer: Viewer) -> Response:
        if viewer.account is not None:
            return JSONResponse({"admin": False, "accounts": [viewer.account]})
        return JSONResponse({"admin": True, "accounts": await self._all_accounts()})

    async def _all_accounts(self) -> list[str]:
        client = self.sidecar.client
        if client is None:
            return []
        prefix = self.sidecar.prefix
        found: set[str] = set()
        async for key in client.scan_iter(match=balance_pattern(prefix), count=500):
            text = key.decode() if isinstance(key, bytes) else str(key)
            account = account_from_key(prefix, text)
            if account is not None:
                found.add(account)
            if len(found) >= MAX_LISTED_ACCOUNTS:
                break
        return sorted(found)

    async def _balance(self, account: str) -> Balance | None:
        enforcer = self.sidecar.enforcer
        if enforcer is None:
            raise RedisError("sidecar used outside its lifespan")
        return await self.sidecar.guard.call(lambda: enforcer.balance(account))

    async def overview(self, request: Request, account: str) -> Response:
        balance = await self._balance(account)
        if balance is None:
            return _error(404, "unknown_account", f"no projection for account {account!r}")
        body = overview_json(balance, now_ms())
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def usage(self, request: Request, account: str) -> Response:
        balance = await self._balance(account)
        if balance is None:
            return _error(404, "unknown_account", f"no projection for account {account!r}")
        try:
            body = await run_in_threadpool(self._usage_report, account, balance)
        except Exception as exc:  # any ClickHouse failure: the history is unavailable, not a bug
            log.warning("usage history unavailable: %s", type(exc).__name__)
            return _error(503, "history_unavailable", "the usage history is unreachable; retry")
        body["account_id"] = account
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def overview_json(balance: Balance, now: int) -> dict[str, Any]:
    """The overview panel: Redis's balance plus what the page derives from it."""
    body = balance.to_json()
    body["in_overage"] = balance.overage_used > 0
    body["now"] = now
    return body


def build_app(
    *,
    redis_url: str,
    redis_prefix: str,
    api_keys: Mapping[str, str],
    access: AccessControl,
    clickhouse: ClientFactory,
    fail_mode: FailMode = FailMode.AUTO,
    sidecar: Sidecar | None = None,
    relay: QueryRelay | None = None,
) -> Starlette:
    """The sidecar app with the account page's routes appended to its router (``sidecar``, when
    given, is used as built, e.g. by :func:`projections.sidecar_cli.sidecar_from_env`)."""
    if sidecar is None:
        sidecar = Sidecar(redis_url, redis_prefix, api_keys, fail_mode)
    page = AccountPage(sidecar, access, clickhouse)
    sidecar.app.router.routes.extend(page.routes())
    if relay is not None:
        sidecar.app.router.routes.append(relay.route())
    return sidecar.app
