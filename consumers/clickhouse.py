"""One way to open ClickHouse: ``chdb://PATH`` (embedded, in-process) or ``http(s)://`` (server).

chDB hosts one engine per process and refuses a second path while clients are open, so
clients are cached per (url, database) and :func:`close_all` releases the engine, e.g.
before a child process opens the same path. Everything above this module speaks plain
clickhouse-connect and the same SQL on both backends.

Only one process may open a chDB path at a time. The process that does records itself in an
owner file beside the path (``<path>.owner.json``: pid, command, and, for ``metering run
web``, the address and token of its read-only query relay), so another process that finds the
path in use can say who holds it, or ask the holder (:mod:`consumers.query_relay`).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from metering.config import StateInUse, env_value

DEFAULT_DATABASE = "metering"


def default_database() -> str:
    """``METERING_CLICKHOUSE_DATABASE``, else ``metering``."""
    return env_value("METERING_CLICKHOUSE_DATABASE", default=DEFAULT_DATABASE)


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    """``--database``, declared the same way by every command that reads or writes ClickHouse."""
    parser.add_argument(
        "--database",
        default=default_database(),
        metavar="NAME",
        help="ClickHouse database (default: METERING_CLICKHOUSE_DATABASE, else "
        f"{DEFAULT_DATABASE})",
    )


class ClickHouseInUse(StateInUse):
    """The embedded ClickHouse path is held by another process; the message says which."""

    def __init__(self, path: str, owner: Owner | None) -> None:
        self.path = path
        self.owner = owner
        held = f"by {owner.command} (pid {owner.pid})" if owner else "by another process"
        super().__init__(f"the embedded ClickHouse at {path} is in use {held}")


_lock = threading.Lock()
_claim_lock = threading.Lock()
_clients: dict[tuple[str, str | None, int], Client] = {}


def chdb_path(url: str) -> str:
    """The filesystem path of a ``chdb://`` URL (``chdb:///abs`` and ``chdb://rel`` both work)."""
    return url[len("chdb://") :] if url.startswith("chdb://") else url


def is_embedded(url: str) -> bool:
    return url.startswith("chdb://")


def _in_memory(path: str) -> bool:
    return path in ("", "memory", ":memory:")


# -- who holds a chDB path -------------------------------------------------------------------


class Owner:
    """The owner file of a chDB path: which process holds it, and its query relay, if any."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.pid = int(record.get("pid", 0))
        self.command = str(record.get("command", "a process"))
        self.query_url: str | None = record.get("query_url")
        self.token: str | None = record.get("token")

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self.pid > 0


def owner_file(path: str) -> Path:
    return Path(os.path.abspath(path.rstrip("/")) + ".owner.json")


def read_owner(path: str) -> Owner | None:
    """The live owner of ``path``, or None (no file, unreadable, or its process is gone)."""
    try:
        owner = Owner(json.loads(owner_file(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return owner if owner.alive() else None


def _command() -> str:
    args = [os.path.basename(sys.argv[0]), *sys.argv[1:3]] if sys.argv and sys.argv[0] else []
    return " ".join(a for a in args if a) or "python"


def record_owner(path: str, **relay: str) -> None:
    """Write this process into ``path``'s owner file (0600: it may hold a relay token).

    Best effort: the file only improves an error message or finds the relay."""
    target = owner_file(path)
    record = {"pid": os.getpid(), "command": _command(), **relay}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
        os.replace(tmp, target)
    except OSError:
        return
    atexit.register(_forget_owner, path)


def _forget_owner(path: str) -> None:
    try:
        if json.loads(owner_file(path).read_text()).get("pid") == os.getpid():
            owner_file(path).unlink()
    except (OSError, ValueError, AttributeError):
        pass


_claimed: set[str] = set()


def _claim(path: str) -> None:
    """Record this process as the owner once per path (keeping a relay it advertised)."""
    if path not in _claimed:
        _claimed.add(path)
        current = read_owner(path)
        if current is None or current.pid != os.getpid():
            record_owner(path)


# -- clients -----------------------------------------------------------------------------------


def open_client(url: str, database: str | None = None, *, sessions: bool = True) -> Client:
    """A new, uncached client. Raises :class:`ClickHouseInUse` for a chDB path another
    process holds. ``sessions=False``: no HTTP session id, so calls may run in parallel."""
    if is_embedded(url):
        path = chdb_path(url)
        if _in_memory(path):
            return clickhouse_connect.get_client(interface="chdb", database=database)
        holder = read_owner(path)
        if holder is not None and holder.pid != os.getpid():
            # Asking the engine would only fail, after it printed its own lock error.
            raise ClickHouseInUse(path, holder)
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=path, database=database)
        except ProgrammingError as exc:
            if "Unable to open the chdb engine" in str(exc):
                raise ClickHouseInUse(path, read_owner(path)) from None
            raise
        with _claim_lock:
            _claim(path)
        return client
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"unsupported ClickHouse URL {url!r}: use chdb://PATH or http(s)://")
    kwargs: dict[str, Any] = {"dsn": url}
    if database is not None:
        kwargs["database"] = database
    if not sessions:
        kwargs["autogenerate_session_id"] = False
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
            client = open_client(url, database)
            _clients[key] = client
        return client


def ensure_database(url: str, database: str) -> None:
    """Create ``database`` if missing (through a database-less client, which must exist first)."""
    connect(url).command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")


def close_all() -> None:
    """Close every cached client, releasing the chDB engine (and its owner file) for this
    process."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    with _claim_lock:
        for path in _claimed:
            _forget_owner(path)
        _claimed.clear()
    for client in clients:
        client.close()


def quote_identifier(name: str) -> str:
    """Backquote an identifier (a database name from config); values are always bound instead."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
