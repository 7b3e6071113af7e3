"""``POST /v1/admin/query``: read-only SQL for the CLI while this process holds embedded ClickHouse.

Only one process may open a chDB path, and ``metering run web`` holds it for the sink and the
page. So the analyst commands send their SQL here (:mod:`consumers.query_relay` is the client
side and runs it with ClickHouse's ``readonly=1``). Callers present the admin key, or the token
this process wrote into the path's owner file, readable only by the same OS user. A ClickHouse
error is a 400 with its first line; nothing here answers 5xx for a caller's SQL.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from clickhouse_connect.driver.client import Client
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accountpage.access import AccessControl
from consumers.clickhouse import open_client
from consumers.query_relay import QUERY_PATH, first_line, run_readonly
from metering.auth import key_owner, presented_key
from projections.requests import BadRequest, error_response, parse_object, read_limited

log = logging.getLogger("accountpage.relay")


class QueryRelay:
    """Runs relayed queries on this process's own clients, one per database, one at a time."""

    def __init__(
        self, clickhouse_url: str, access: AccessControl, token: str | None = None
    ) -> None:
        self.url = clickhouse_url
        self.access = access
        self.token = token or secrets.token_urlsafe(24)
        self._keys = [(True, self.token.encode("utf-8"))]
        self._clients: dict[str, tuple[Client, threading.Lock]] = {}
        self._lock = threading.Lock()

    def route(self) -> Route:
        return Route(QUERY_PATH, self.handle, methods=["POST"])

    def _authorized(self, request: Request) -> bool:
        headers = request.headers
        presented = presented_key(headers.get("x-api-key"), headers.get("authorization"))
        if key_owner(presented, self._keys):
            return True
        viewer = self.access.viewer(presented)
        return viewer is not None and viewer.is_admin

    async def handle(self, request: Request) -> Response:
        if not self._authorized(request):
            return error_response(401, "unauthorized", "the query relay needs the admin key")
        try:
            raw = await read_limited(request.stream(), request.headers.get("content-length"))
            body = parse_object(raw)
            sql, parameters, database = _fields(body)
        except BadRequest as exc:
            return error_response(exc.status, exc.error, exc.message)
        except ClientDisconnect:
            return error_response(400, "client_disconnected", "the request body did not arrive")
        try:
            answer = await run_in_threadpool(self._run, database, sql, parameters)
        except Exception as exc:  # ClickHouse refused or failed the query: say so, never a 500
            log.info("relayed query failed: %s", type(exc).__name__)
            return error_response(400, "query_failed", first_line(exc))
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    def _run(self, database: str, sql: str, parameters: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            entry = self._clients.get(database)
            if entry is None:
                entry = (open_client(self.url, database, sessions=False), threading.Lock())
                self._clients[database] = entry
        client, lock = entry
        with lock:
            try:
                return run_readonly(client, sql, parameters)
            except Exception:
                # A query that failed mid-stream (e.g. over max_result_rows) can leave the
                # rest of its result in the handle; the next query would read it. Start over.
                with self._lock:
                    if self._clients.get(database) is entry:
                        del self._clients[database]
                client.close()
                raise

    def close(self) -> None:
        with self._lock:
            clients = [client for client, _ in self._clients.values()]
            self._clients.clear()
        for client in clients:
            client.close()


def _fields(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    sql, parameters, database = body.get("sql"), body.get("parameters"), body.get("database")
    if not isinstance(sql, str) or not sql.strip():
        raise BadRequest(422, "invalid_request", "sql must be a non-empty string")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise BadRequest(422, "invalid_request", "parameters must be an object")
    if not isinstance(database, str) or not database or len(database) > 256:
        raise BadRequest(422, "invalid_request", "database must be a name of 1 to 256 characters")
    return sql, parameters, database
