"""The query relay of the process that holds embedded ClickHouse, against the real engine.

The relay runs in this process (as ``metering run web`` hosts it) on the session's ClickHouse;
the client side is :class:`consumers.query_relay.RelayClient` over real HTTP. Hostile SQL is
refused by ClickHouse's ``readonly=1``, never with a 5xx, and a failed query leaves nothing
behind for the next one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
import uvicorn
from clickhouse_connect.driver.exceptions import DatabaseError
from starlette.applications import Starlette

from accountpage.access import AccessControl
from accountpage.relay import QueryRelay
from consumers import queries
from consumers.query_relay import QUERY_PATH, RelayClient
from metering.net import free_port

pytestmark = pytest.mark.integration

ADMIN = "admin-key-for-relay"


@pytest.fixture
def relay_url(clickhouse_url: str, ch_database: str) -> Iterator[tuple[str, QueryRelay]]:
    relay = QueryRelay(clickhouse_url, AccessControl({"acme": "acme-key"}, ADMIN))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[relay.route()]), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", relay
    server.should_exit = True
    thread.join(10)
    relay.close()


def test_named_queries_run_through_the_relay(
    relay_url: tuple[str, QueryRelay], ch_database: str
) -> None:
    url, relay = relay_url
    client = RelayClient(url, relay.token, ch_database)
    period = queries.Period(date(2026, 11, 1), date(2026, 12, 1))
    assert queries.usage_by(client, "acme", period, "subject") == []
    assert queries.top_accounts(client, period, 5) == []
    result = client.query(
        "SELECT toDate({d:Date}) AS d, 7 AS n", parameters={"d": date(2026, 1, 2)}
    )
    assert result.result_rows == [(date(2026, 1, 2), 7)]
    admin = RelayClient(url, ADMIN, ch_database)  # the admin key works too
    assert admin.query("SELECT count() FROM ledger_entries").result_rows == [(0,)]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO ledger_entries (account_id) VALUES ('x')",
        "DROP TABLE ledger_entries",
        "CREATE TABLE evil (x Int8) ENGINE = Memory",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT number FROM system.numbers LIMIT 2000000",
        "SELEC nonsense",
    ],
)
def test_hostile_sql_is_refused_and_leaves_nothing_behind(
    relay_url: tuple[str, QueryRelay], ch_database: str, sql: str
) -> None:
    url, relay = relay_url
    client = RelayClient(url, relay.token, ch_database)
    with pytest.raises(DatabaseError):
        client.query(sql)
    assert client.query("SELECT count() FROM ledger_entries").result_rows == [(0,)]
    assert client.query("SELECT count() FROM system.tables WHERE name = 'evil'").result_rows == [
        (0,)
    ]


def test_bad_requests_get_4xx(relay_url: tuple[str, QueryRelay], ch_database: str) -> None:
    url, relay = relay_url
    token = {"Authorization": f"Bearer {relay.token}"}
    good = {"sql": "SELECT 1", "database": ch_database}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post(QUERY_PATH, json=good).status_code == 401
        assert (
            http.post(QUERY_PATH, json=good, headers={"X-API-Key": "acme-key"}).status_code == 401
        )
        assert http.post(QUERY_PATH, content=b"[1]", headers=token).status_code == 400
        big = {"sql": "SELECT 1 -- " + "x" * 70_000, "database": ch_database}
        assert http.post(QUERY_PATH, json=big, headers=token).status_code == 413
        assert http.post(QUERY_PATH, json={"sql": "SELECT 1"}, headers=token).status_code == 422
        missing = http.post(
            QUERY_PATH, json={"sql": "SELECT 1", "database": "no_such_db"}, headers=token
        )
        assert missing.status_code == 400 and "UNKNOWN_DATABASE" in missing.json()["message"]
        assert http.post(QUERY_PATH, json=good, headers=token).json()["rows"] == [[1]]


def test_commands_name_the_holder_of_the_path_in_one_line(tmp_path: Path) -> None:
    """A process that holds the path and serves no relay: every command says who, no traceback."""
    url = f"chdb://{tmp_path / 'held'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_PATH, url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        env = {**os.environ, "METERING_CLICKHOUSE_URL": url}
        for command in (["clickhouse", "migrate"], ["usage", "--top", "3"]):
            done = subprocess.run(
                [sys.executable, "-m", "cli.main", *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 2, done
            assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert f"pid {holder.pid}" in done.stderr and "Traceback" not in done.stderr
    finally:
        holder.kill()
        holder.wait(10)


HOLD_THE_PATH = """
import sys, time
from consumers.clickhouse import connect
connect(sys.argv[1]).command("SELECT 1")
print("holding", flush=True)
time.sleep(120)
"""
