"""One way to open ClickHouse: ``chdb://PATH`` (embedded, in-process) or ``http(s)://`` (server).

chDB hosts one engine per process and refuses a second path while clients are open, so
clients are cached per (url, database) and :func:`close_all` releases the engine, e.g.
before a child process opens the same path. Everything above this module speaks plain
clickhouse-connect and the same SQL on both backends.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

DEFAULT_DATABASE = "metering"


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    """``--database``, declared the same way by every command that reads or writes ClickHouse."""
    parser.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        metavar="NAME",
        help=f"ClickHouse database (default: {DEFAULT_DATABASE})",
    )


_lock = threading.Lock()
_clients: dict[tuple[str, str | None, int], Client] = {}


def chdb_path(url: str) -> str:
    """The filesystem path of a ``chdb://`` URL (``chdb:///abs`` and ``chdb://rel`` both work)."""
    return url[len("chdb://") :] if url.startswith("chdb://") else url


def is_embedded(url: str) -> bool:
    return url.startswith("chdb://")


def _open(url: str, database: str | None) -> Client:
    if is_embedded(url):
        path = chdb_path(url)
        if path in ("", "memory", ":memory:"):
            return clickhouse_connect.get_client(interface="chdb", database=database)
        return clickhouse_connect.get_client(interface="chdb", path=path, database=database)
    parsed = urlparse(url)
    kwargs: dict[str, Any] = {"dsn": url}
    if database is not None:
        kwargs["database"] = database
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"unsupported ClickHouse URL {url!r}: use chdb://PATH or http(s)://")
    return clickhouse_connect.get_client(**kwargs)


def connect(url: str, database: str | None = None, *, slot: int = 0) -> Client:
    """A cached client for ``url``; ``database`` becomes its default database (must exist).

    ``slot`` > 0 gives another cached client for the same target (its own chDB handle or
    HTTP session): calls on one client are serialized, so parallel inserts need several.
    """
    key = (url, database, slot)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _open(url, database)
            _clients[key] = client
        return client


def ensure_database(url: str, database: str) -> None:
    """Create ``database`` if missing (through a database-less client, which must exist first)."""
    connect(url).command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")


def close_all() -> None:
    """Close every cached client, releasing the chDB engine for this process."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def quote_identifier(name: str) -> str:
    """Backquote an identifier (a database name from config); values are always bound instead."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
