"""Read-only queries through the process that holds an embedded ClickHouse path.

chDB lets one process open a path. While ``metering run web`` (or the demo) holds it, the
analyst commands (``metering usage``, ``metering reconcile``) and a notebook's
:func:`open_reader` cannot open it. So the holder serves ``POST /v1/admin/query`` (admin key,
or the token it wrote into the path's owner file), and :func:`open_reader` falls back to a
:class:`RelayClient` that sends the same SQL there. The server runs it with ClickHouse's own
``readonly=1`` (no writes, no DDL, no settings changes, no table functions such as ``file()``),
bounded rows and time. Values travel as JSON and come back typed by their column types, so
the query functions in :mod:`consumers.queries` and :mod:`consumers.reconcile` run unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

import httpx
from clickhouse_connect.driver.exceptions import DatabaseError

from consumers.clickhouse import (
    ClickHouseInUse,
    default_database,
    open_client,
)

QUERY_PATH = "/v1/admin/query"
READONLY_SETTINGS: dict[str, Any] = {
    "max_result_rows": 1_000_000,
    "result_overflow_mode": "throw",
    "max_execution_time": 120,
    "readonly": 1,
}
"""Applied by the server to every relayed query; ``readonly=1`` (last, so the limits before it
are still settable) also forbids the query to change them."""


class QueryResult(Protocol):
    """What the query functions read from a result (clickhouse-connect's QueryResult has it)."""

    @property
    def column_names(self) -> Sequence[str]: ...

    @property
    def result_rows(self) -> Sequence[Sequence[Any]]: ...


class Reader(Protocol):
    """A ClickHouse client that can at least run a query: a clickhouse-connect Client or a
    :class:`RelayClient`."""

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> QueryResult: ...

    def close(self) -> None: ...


class RelayUnavailable(RuntimeError):
    """The path is held and its holder serves no relay (or cannot be reached)."""


# -- the wire format: JSON values, typed back by their ClickHouse column types ----------------


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _base_type(name: str) -> str:
    for wrapper in ("Nullable(", "LowCardinality("):
        while name.startswith(wrapper) and name.endswith(")"):
            name = name[len(wrapper) : -1]
    return name


def _from_json(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    base = _base_type(type_name)
    if base.startswith("DateTime"):
        return datetime.fromisoformat(value)
    if base.startswith("Date"):
        return date.fromisoformat(value)
    if base.startswith("Decimal"):
        return Decimal(value)
    return value


def encode_result(
    column_names: Sequence[str], column_types: Sequence[str], rows: Any
) -> dict[str, Any]:
    return {
        "columns": list(column_names),
        "types": list(column_types),
        "rows": [[_to_json(v) for v in row] for row in rows],
    }


def encode_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Bound values as ClickHouse parses them from text (a Date as ``YYYY-MM-DD``)."""
    return {name: _to_json(value) for name, value in (parameters or {}).items()}


def run_readonly(client: Any, sql: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The server's side: run ``sql`` read-only and encode its result."""
    result = client.query(sql, parameters=dict(parameters or {}), settings=READONLY_SETTINGS)
    types = [t.name for t in result.column_types]
    return encode_result(result.column_names, types, result.result_rows)


@dataclass(frozen=True, slots=True)
class RelayResult:
    column_names: tuple[str, ...]
    result_rows: list[tuple[Any, ...]]

    @classmethod
    def decode(cls, body: Mapping[str, Any]) -> RelayResult:
        types = body["types"]
        rows = [
            tuple(_from_json(v, t) for v, t in zip(row, types, strict=True)) for row in body["rows"]
        ]
        return cls(tuple(body["columns"]), rows)


class RelayClient:
    """Sends queries to the holder's relay; ClickHouse errors come back as ``DatabaseError``."""

    def __init__(self, base_url: str, token: str, database: str, timeout_s: float = 150.0) -> None:
        self.database = database
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> RelayResult:
        body = {
            "sql": query,
            "parameters": encode_parameters(parameters),
            "database": self.database,
        }
        try:
            response = self._http.post(QUERY_PATH, json=body)
        except httpx.HTTPError as exc:
            raise RelayUnavailable(
                f"the query relay at {self._http.base_url} did not answer ({type(exc).__name__})"
            ) from None
        if response.status_code == 200:
            return RelayResult.decode(response.json())
        try:
            message = str(response.json().get("message", response.text))
        except ValueError:
            message = response.text
        if response.status_code == 400:
            raise DatabaseError(message)
        raise RelayUnavailable(f"the query relay answered {response.status_code}: {message}")

    def close(self) -> None:
        self._http.close()


READ_ERRORS = (RelayUnavailable, ClickHouseInUse, DatabaseError)
"""What opening or querying a reader may raise that a command reports in one line."""


def first_line(exc: BaseException, limit: int = 500) -> str:
    """An error in one bounded line (ClickHouse's messages run to stack traces)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def read_problem(exc: BaseException, database: str) -> str:
    """One line for a command's user: what went wrong reading ClickHouse, and what to do."""
    if "UNKNOWN_DATABASE" in str(exc):
        return (
            f"ClickHouse database {database!r} does not exist (`metering clickhouse migrate "
            "--database NAME` creates it; or pass --database, or METERING_CLICKHOUSE_DATABASE)"
        )
    return first_line(exc)


def open_reader(url: str | None = None, database: str | None = None) -> Reader:
    """A client for reading ClickHouse: its own when it can open it, else the relay of the
    process that holds the embedded path. Raises :class:`RelayUnavailable` with what to do
    when neither works. Defaults: ``METERING_CLICKHOUSE_URL`` and ``..._DATABASE``."""
    if url is None:
        from metering.config import load_settings

        url = load_settings().clickhouse_url
    database = database or default_database()
    try:
        client: Reader = open_client(url, database, sessions=False)
        return client
    except ClickHouseInUse as busy:
        owner = busy.owner
        if owner is not None and owner.query_url and owner.token:
            return RelayClient(owner.query_url, owner.token, database)
        raise RelayUnavailable(
            f"{busy}, which serves no queries: stop it, or run `metering run web` (it hosts the "
            "sink on embedded ClickHouse and answers these queries), or use a ClickHouse server"
        ) from None
