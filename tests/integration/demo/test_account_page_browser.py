"""The account page in a real headless Chromium against the real pipeline.

Processor and projection run as subprocesses; the web app (sidecar + page) and the
ClickHouse sink run in this process, exactly as ``accountpage.server`` hosts them, so this
process owns the chDB engine and can check the page's figures against ClickHouse directly.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from accountpage.access import AccessControl
from accountpage.app import build_app
from accountpage.server import EmbeddedSink, ReaderHolder
from consumers.clickhouse import connect
from consumers.migrations import migrate
from demo.scenario import command, month_start
from metering.net import free_port
from metering.sdk import CommandPublisher, UsageReporter, make_usage_event
from metering.topics import TopicNames

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO / "test-artifacts" / "account-page.png"
ADMIN_KEY = "admin-" + uuid.uuid4().hex
KEY_A = "key-a-" + uuid.uuid4().hex
KEY_B = "key-b-" + uuid.uuid4().hex
SERVICE_KEY = "svc-" + uuid.uuid4().hex


def _wait(what: str, done: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Children:
    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
            )
        self.procs.append((name, proc))

    def check(self) -> None:
        for name, proc in self.procs:
            assert proc.poll() is None, (
                f"{name} died: {(self.log_dir / f'{name}.log').read_text()[-3000:]}"
            )

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class Pipeline:
    """Handles for the test: HTTP client, ClickHouse client, publishers."""

    def __init__(
        self, base_url: str, database: str, clickhouse_url: str, topics: TopicNames
    ) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=10.0)
        self.clickhouse = connect(clickhouse_url, database)
        self.topics = topics

    def get(self, path: str, key: str = ADMIN_KEY) -> httpx.Response:
        return self.http.get(path, headers={"X-API-Key": key})

    def overview(self, account: str) -> dict[str, Any]:
        r = self.get(f"/v1/accounts/{account}/overview")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture
def pipeline(
    topics: TopicNames, clickhouse_url: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Pipeline]:
    tag = uuid.uuid4().hex[:8]
    redis_prefix = f"mt:web{tag}:"
    database = f"web_{tag}"
    env = dict(os.environ, METERING_REDIS_PREFIX=redis_prefix, PYTHONUNBUFFERED="1")
    children = Children(tmp_path, env)
    # fmt: off
    children.start(
        "processor", "run", "processor", "--prefix", topics.prefix, "--partitions", "6",
        "--web-port", str(free_port()), "--data-dir", str(tmp_path / "processor"),
        "--sweep-interval", "0", "--loglevel", "warning",
    )
    children.start(
        "projection", "run", "projection", "--topic-prefix", topics.prefix,
        "--group", f"{topics.prefix}projection", "--log-level", "warning",
    )
    # fmt: on
    migrate(clickhouse_url, database)
    sink = EmbeddedSink(
        bootstrap=kafka_bootstrap,
        clickhouse_url=clickhouse_url,
        database=database,
        topics=topics,
        group=f"{topics.prefix}sink",
    ).start()
    reader = ReaderHolder(clickhouse_url, database)
    app = build_app(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        api_keys={"svc": SERVICE_KEY},
        access=AccessControl({"acct-a": KEY_A, "acct-b": KEY_B}, ADMIN_KEY),
        clickhouse=reader,
    )
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait("uvicorn", lambda: server.started, 20)
    try:
        yield Pipeline(f"http://127.0.0.1:{port}", database, clickhouse_url, topics)
        children.check()
    finally:
        server.should_exit = True
        thread.join(10)
        sink.stop()
        reader.close()
        children.stop()
        gc.collect()  # drop Kafka clients now, not after the stack is gone


def _publish_story(p: Pipeline) -> dict[str, int]:
    """Plans for two accounts and a spread of usage now; returns usage events per account."""
    now = time.time_ns() // 1_000_000
    period_start = month_start(now)
    with CommandPublisher(topic=p.topics.credit_commands) as publisher:
        for account in ("acct-a", "acct-b"):
            publisher.publish(
                command(f"{account}-plan", account, "assign_plan", period_start, plan_id="growth")
            )
    # Wait for the plans to be projected: usage must not overtake them (two topics).
    _wait("plans in Redis", lambda: p.get("/v1/me").json()["accounts"] == ["acct-a", "acct-b"])
    counts = {"acct-a": 0, "acct-b": 0}
    spread = [
        ("acct-a", "design", "image_generation", "flux-1", {"images": 2}),
        ("acct-a", "research", "document_analysis", None, {"pages": 7, "input_tokens": 3100}),
        ("acct-a", "marketing", "text_generation", "gpt-4o",
         {"requests": 1, "input_tokens": 1800, "output_tokens": 700}),
        ("acct-a", "research", "text_generation", "gpt-4o-mini",
         {"requests": 1, "input_tokens": 900, "output_tokens": 300}),
        ("acct-b", "design", "image_generation", "flux-1", {"images": 1}),
    ]  # fmt: skip
    with UsageReporter(topic=p.topics.usage_events) as reporter:
        for i in range(40):
            account, subject, feature, model, units = spread[i % len(spread)]
            reporter.report(
                make_usage_event(
                    account, feature, units, subject=subject, model=model,
                    occurred_at=period_start + (now - 60_000 - period_start) * (i + 1) // 40,
                )
            )  # fmt: skip
            counts[account] += 1
    return counts


def _clickhouse_usage(p: Pipeline, account: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(subject, feature) -> (events, micro-credits) straight from the history tables."""
    credits = p.clickhouse.query(
        "SELECT subject, feature, toInt64(-sum(amount)) FROM ledger_entries "
        "WHERE account_id = {a:String} AND type IN ('USAGE_DEBIT', 'OVERAGE') "
        "GROUP BY subject, feature",
        parameters={"a": account},
    ).result_rows
    events = p.clickhouse.query(
        "SELECT subject, feature, count() FROM usage_events WHERE account_id = {a:String} "
        "GROUP BY subject, feature",
        parameters={"a": account},
    ).result_rows
    by_key = {(s, f): int(c) for s, f, c in credits}
    return {(s, f): (int(n), by_key.get((s, f), 0)) for s, f, n in events}


def _ledger_seq_in_clickhouse(p: Pipeline, account: str) -> int:
    rows = p.clickhouse.query(
        "SELECT max(seq) FROM ledger_entries WHERE account_id = {a:String}",
        parameters={"a": account},
    ).result_rows
    return int(rows[0][0] or 0)


def test_account_page_in_chromium(pipeline: Pipeline) -> None:
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    p = pipeline
    counts = _publish_story(p)

    def settled() -> bool:
        seq = p.overview("acct-a")["seq"]
        ch = _clickhouse_usage(p, "acct-a")
        return (
            sum(n for n, _ in ch.values()) == counts["acct-a"]
            and _ledger_seq_in_clickhouse(p, "acct-a") == seq
            and seq >= 2 + counts["acct-a"]
        )

    _wait("usage in Redis and ClickHouse", settled)
    api = p.overview("acct-a")
    expected_rows = _clickhouse_usage(p, "acct-a")

    # Access: an account key sees its own account only; the admin sees all.
    assert p.get("/v1/me", KEY_A).json() == {"admin": False, "accounts": ["acct-a"]}
    assert p.get("/v1/accounts/acct-b/overview", KEY_A).status_code == 404
    assert p.get("/v1/accounts/acct-b/usage", KEY_A).status_code == 404
    assert p.get("/v1/accounts/acct-a/overview", "nope").status_code == 401
    assert p.get("/v1/me").json() == {"admin": True, "accounts": ["acct-a", "acct-b"]}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{p.base_url}/account#key={ADMIN_KEY}&account=acct-a")
            balance = page.locator("#balance")
            expect(balance).to_have_attribute("data-micro", str(api["available"]), timeout=15_000)
            expect(page.locator("#renewal")).to_have_attribute("data-ms", str(api["period_end"]))
            expect(page.locator("#plan")).to_have_text("growth")
            # Grants: one row per grant, remaining equal to the API's.
            for grant in api["grants"]:
                row = page.locator(f'#grants tr[data-grant="{grant["grant_id"]}"]')
                expect(row.locator("td").nth(1)).to_have_text(grant["source"])
                expect(row.locator("td").nth(2)).to_have_attribute(
                    "data-micro", str(grant["remaining"])
                )
            # Usage table: every (subject, feature) row equals ClickHouse's raw history.
            rows = page.locator("#usage-table tbody tr")
            expect(rows).to_have_count(len(expected_rows), timeout=15_000)
            for (subject, feature), (events, micro) in expected_rows.items():
                row = page.locator(
                    f'#usage-table tr[data-subject="{subject}"][data-feature="{feature}"]'
                )
                expect(row.locator("td.events")).to_have_text(str(events))
                expect(row.locator("td.credits")).to_have_attribute("data-micro", str(micro))
            total = sum(m for _, m in expected_rows.values())
            expect(page.locator("#usage-total")).to_have_attribute("data-micro", str(total))
            expect(page.locator("#burndown svg path.balance-line")).to_have_count(1)
            # The admin can switch accounts; an account key could not (select disabled).
            expect(page.locator("#account-select option")).to_have_count(2)

            # New usage lowers the balance on the open page, without a reload.
            page.evaluate("window.__marker = 'same-document'")
            with UsageReporter(topic=p.topics.usage_events) as reporter:
                reporter.report(
                    make_usage_event(
                        "acct-a", "image_generation", {"images": 4}, subject="design",
                        model="flux-1",
                    )
                )  # fmt: skip
            dropped = api["available"] - 100 * 1_000_000
            _wait("the new debit in Redis", lambda: p.overview("acct-a")["available"] == dropped)
            expect(balance).to_have_attribute("data-micro", str(dropped), timeout=5_000)
            assert page.evaluate("window.__marker") == "same-document", "page was reloaded"
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # An account key sees its account and nothing else.
            other = browser.new_page()
            other.goto(f"{p.base_url}/account#key={KEY_B}")
            expect(other.locator("#account-select option")).to_have_count(1, timeout=10_000)
            expect(other.locator("#account-select")).to_have_value("acct-b")
            expect(other.locator("#account-select")).to_be_disabled()
        finally:
            browser.close()
