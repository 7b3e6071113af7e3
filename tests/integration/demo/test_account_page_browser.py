"""The account page in a real headless Chromium against the real pipeline.

Processor and projection run as subprocesses; the web app (sidecar + page) and the
ClickHouse sink run in this process, exactly as ``accountpage.server`` hosts them, so this
process owns the chDB engine and can check the page's figures against ClickHouse directly.

Checked at 1280 px and 390 px wide: no sideways page scroll, y-axis labels inside the chart
with round values and at most 2 decimals, grant names for people (raw id in ``title``), the
runway line; and, with the API held or failing through ``page.route``, the loading and error
states, and a history squeezed into the period's last hours. Screenshots of both widths go
to ``test-artifacts/`` at the repo root.
"""

from __future__ import annotations

import calendar
import gc
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
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
from projections.sidecar import Sidecar

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
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = {1280: ARTIFACTS / "account-page-1280.png", 390: ARTIFACTS / "account-page-390.png"}
AXIS_LABEL = re.compile(r"^-?\d{1,3}(,\d{3})*(\.\d{1,2})?$")
"""An axis label: thousands separators, at most 2 decimals."""
FIELDS = (
    "balance", "spendable", "runway", "plan", "renewal", "monthly", "policy", "overage-limit",
    "reserved", "overage", "usage-events", "usage-total", "ch-seq",
)  # fmt: skip
PLACEHOLDER = "\N{EN DASH}"
"""What a field showed before its data, with no sign that data was on its way."""
DAY_MS = 86_400_000
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
        "processor", "run", "processor", "--topic-prefix", topics.prefix, "--partitions", "6",
        "--web-port", str(free_port()), "--data-dir", str(tmp_path / "processor"),
        "--sweep-interval", "0", "--log-level", "warning",
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
    # This process also runs the sink, whose inserts hold the GIL for longer than the
    # production 30 ms Redis deadline on a loaded 2-core machine: the page's reads would time out
    # and show "unreachable". The page is under test here, not the deadline (its own tests in
    # tests/integration/projections/ cover it), so give Redis a second.
    sidecar = Sidecar(redis_url, redis_prefix, {"svc": SERVICE_KEY}, deadline_s=1.0)
    app = build_app(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        api_keys={"svc": SERVICE_KEY},
        access=AccessControl({"acct-a": KEY_A, "acct-b": KEY_B}, ADMIN_KEY),
        clickhouse=reader,
        sidecar=sidecar,
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


_LAYOUT_JS = """() => {
  const svg = document.querySelector('#burndown svg');
  const box = svg.getBoundingClientRect();
  const inside = (b) => b.width > 0 && b.left >= box.left - 0.5 && b.right <= box.right + 0.5
    && b.top >= box.top - 0.5 && b.bottom <= box.bottom + 0.5;
  const text = (sel) => [...svg.querySelectorAll(sel)].map((t) => ({
    text: t.textContent, micro: t.dataset.micro, inside: inside(t.getBoundingClientRect()) }));
  const line = svg.querySelector('path.balance-line').getBoundingClientRect();
  const plot = svg.querySelector('rect').getBoundingClientRect();
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    svgWidth: box.width, yLabels: text('text.y-label'), xLabels: text('text.x-label'),
    lineWidth: line.width, plotWidth: plot.width,
    short: svg.querySelector('path.balance-line').dataset.short === '1',
  };
}"""


def _check_layout(page: Any, width: int) -> None:
    """At ``width`` px: no sideways scroll, the chart at the box's width, axis labels inside it,
    round and with at most 2 decimals, and a balance line that is more than a vertical stroke."""
    from playwright.sync_api import expect

    page.set_viewport_size({"width": width, "height": 1100})
    # The chart redraws at its box's new width (1 SVG unit = 1 CSS px).
    box_width = int(page.locator("#burndown").evaluate("b => b.clientWidth"))
    expect(page.locator("#burndown svg")).to_have_attribute("width", str(max(240, box_width)))
    r = page.evaluate(_LAYOUT_JS)
    assert r["scrollWidth"] <= r["innerWidth"], f"page overflows sideways at {width} px: {r}"
    assert r["svgWidth"] <= r["innerWidth"]
    labels = r["yLabels"]
    assert len(labels) >= 2, labels
    for label in labels + r["xLabels"]:
        assert label["inside"], f"axis label {label['text']!r} is clipped at {width} px"
    for label in labels:
        assert AXIS_LABEL.match(label["text"]), f"axis label {label['text']!r} at {width} px"
    ticks = [int(label["micro"]) for label in labels]
    steps = {b - a for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and all(t % 10_000 == 0 for t in ticks), ticks  # round, even steps
    assert 0 in ticks
    # A step line spread over the period, or (short history) the balance across the period.
    assert r["lineWidth"] >= 0.04 * r["plotWidth"] - 1, r


def _expected_grant_name(grant: dict[str, Any]) -> str | re.Pattern[str]:
    """What a person reads for a grant: its month for plan grants and rollovers, else its kind
    (with the date it took effect)."""
    tail = grant["grant_id"].partition(":")[2]
    at = int(tail) if tail.isdigit() else grant["effective_at"]
    month = datetime.fromtimestamp(at / 1000, tz=UTC).month
    if grant["source"] == "plan":
        return f"Monthly credits, {calendar.month_name[month]}"
    if grant["source"] == "rollover":
        return f"Rollover from {calendar.month_name[(month - 2) % 12 + 1]}"
    kind = {"purchase": "Purchase", "promotion": "Promotion", "adjustment": "Adjustment"}
    name = kind.get(grant["source"], grant["source"].capitalize())
    return re.compile(rf"^{name}(, \d{{1,2}} [A-Z][a-z]{{2}}( \d{{4}})?)?$")


def _check_grant_names(page: Any, grants: list[dict[str, Any]]) -> None:
    from playwright.sync_api import expect

    for grant in grants:
        name = page.locator(f'#grants tr[data-grant="{grant["grant_id"]}"] td').first
        expect(name).to_have_attribute("title", grant["grant_id"])
        expect(name).to_have_text(_expected_grant_name(grant))
        assert grant["grant_id"] not in (name.text_content() or "")


def _spent_in_clickhouse(p: Pipeline, account: str, since: int, until: int) -> int:
    rows = p.clickhouse.query(
        "SELECT toInt64(-sum(amount)) FROM ledger_entries WHERE account_id = {a:String} "
        "AND type IN ('USAGE_DEBIT', 'OVERAGE') "
        "AND occurred_at >= fromUnixTimestamp64Milli({s:Int64}, 'UTC') "
        "AND occurred_at < fromUnixTimestamp64Milli({u:Int64}, 'UTC')",
        parameters={"a": account, "s": since, "u": until},
    ).result_rows
    return int(rows[0][0] or 0)


def _check_runway(page: Any, p: Pipeline, account: str) -> None:
    """The API's runway from ClickHouse's raw ledger in integers; the page shows it as a date."""
    from playwright.sync_api import expect

    runway = page.locator("#runway")
    expect(runway).to_have_attribute("aria-busy", "false", timeout=10_000)
    r = p.get(f"/v1/accounts/{account}/usage").json()["runway"]
    assert r["used"] == _spent_in_clickhouse(p, account, r["since"], r["until"])
    assert DAY_MS <= r["until"] - r["since"] <= 7 * DAY_MS
    if r["available"] <= 0:
        expected = ("exhausted", None)
    elif r["used"] == 0:
        expected = ("no_usage", None)
    else:
        at = r["until"] + r["available"] * (r["until"] - r["since"]) // r["used"]
        expected = ("runs_out", at) if at < r["period_end"] else ("outlasts", None)
    assert (r["status"], r["runout_ms"]) == expected, r
    expect(runway).to_have_attribute("data-status", r["status"])
    runout = runway.get_attribute("data-runout-ms") or ""
    text = runway.text_content()
    if r["status"] == "runs_out":
        shown = int(runout)  # read a poll apart from the API's: seconds apart at most
        assert abs(shown - r["runout_ms"]) < DAY_MS // 2 and shown < r["period_end"]
        d = datetime.fromtimestamp(shown / 1000, tz=UTC)
        assert re.fullmatch(rf"At this pace, credits run out on {d.day} {d:%b}( \d{{4}})?", text)
    else:
        assert runout == ""
        assert (
            text
            == {
                "outlasts": "Credits outlast this period at the current pace",
                "no_usage": "No usage in the last 7 days",
                "exhausted": "No credits left",
            }[r["status"]]
        )


def _check_loading_then_data(browser: Any, p: Pipeline) -> None:
    """With the account API held, every field shows a busy "Loading…" (no bare dash); it clears
    when the answers are let through."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 900})
    held: list[Any] = []
    gate = {"open": False}

    def hold(route: Any) -> None:
        if gate["open"]:
            route.continue_()
        else:
            held.append(route)

    page.route("**/v1/accounts/**", hold)
    page.goto(f"{p.base_url}/account#key={ADMIN_KEY}&account=acct-a")
    expect(page.locator("#main")).to_be_visible(timeout=10_000)
    deadline = time.monotonic() + 10
    while len(held) < 2:  # route handlers run while Playwright is waited on, not in sleep()
        assert time.monotonic() < deadline, "the page did not call the account API"
        page.wait_for_timeout(50)
    for region in ("cards", "runway", "burndown-panel", "grants-panel", "usage-panel"):
        expect(page.locator(f"#{region}")).to_have_attribute("aria-busy", "true")
    for field in FIELDS:
        expect(page.locator(f"#{field} .skeleton")).to_have_text("Loading…")
        expect(page.locator(f"#{field}")).not_to_have_text(PLACEHOLDER)
    expect(page.locator("#balance .skeleton")).to_be_visible()
    expect(page.locator("#burndown .skeleton")).to_be_visible()
    gate["open"] = True
    for route in held:
        route.continue_()
    for region in ("cards", "runway", "burndown-panel", "grants-panel", "usage-panel"):
        expect(page.locator(f"#{region}")).to_have_attribute("aria-busy", "false", timeout=10_000)
    expect(page.locator("#main .skeleton")).to_have_count(0)
    expect(page.locator("#balance")).not_to_have_attribute("data-micro", "")
    page.close()


def _check_error_state(browser: Any, p: Pipeline) -> None:
    """The balance API failing: its fields say "Unavailable" and a banner says why; the page
    recovers by itself when the API answers again."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 900})
    failing = "**/v1/accounts/*/overview"
    page.route(
        failing,
        lambda route: route.fulfill(
            status=503,
            json={"error": "redis_unavailable", "message": "the balance store is unreachable"},
        ),
    )
    page.goto(f"{p.base_url}/account#key={ADMIN_KEY}&account=acct-a")
    expect(page.locator("#status")).to_be_visible(timeout=10_000)
    expect(page.locator("#status")).to_contain_text("the balance store is unreachable")
    expect(page.locator("#cards")).to_have_attribute("data-state", "error")
    expect(page.locator("#cards")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#balance")).to_have_text("Unavailable")
    expect(page.locator("#usage-panel")).to_have_attribute("data-state", "ready", timeout=10_000)
    page.unroute(failing)
    expect(page.locator("#cards")).to_have_attribute("data-state", "ready", timeout=10_000)
    expect(page.locator("#status")).to_be_hidden()
    expect(page.locator("#balance")).not_to_have_attribute("data-micro", "")
    page.close()


def _box(locator: Any, timeout_s: float = 10.0) -> Any:
    """The element's bounding box once it is drawn: a refresh that redraws the chart leaves it
    without one for a moment (``bounding_box`` answered None once, mid-redraw)."""
    deadline = time.monotonic() + timeout_s
    while True:
        box = locator.bounding_box()
        if box or time.monotonic() > deadline:
            return box
        time.sleep(0.1)


def _check_short_history(browser: Any, p: Pipeline) -> None:
    """An account whose whole history sits in its period's last hours (the API's answers
    reshaped through ``page.route``) is drawn across the period, not as a vertical stroke."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 900})
    now = time.time_ns() // 1_000_000

    def overview(route: Any) -> None:
        response = route.fetch()
        if response.status != 200:  # a transient error answer goes through as it is
            route.fulfill(response=response)
            return
        body = response.json()
        body["period_end"] = body["now"] + 3 * 3_600_000
        body["period_start"] = body["period_end"] - 30 * DAY_MS
        route.fulfill(json=body)

    def usage(route: Any) -> None:
        response = route.fetch()
        if response.status != 200:
            route.fulfill(response=response)
            return
        body = response.json()
        for i, entry in enumerate(body["burndown"]):
            entry["at"] = now - 2 * 3_600_000 + i * 60_000
        route.fulfill(json=body)

    page.route("**/v1/accounts/*/overview", overview)
    page.route("**/v1/accounts/*/usage", usage)
    page.goto(f"{p.base_url}/account#key={ADMIN_KEY}&account=acct-a")
    line = page.locator('#burndown svg path.balance-line[data-short="1"]')
    expect(line).to_have_count(1, timeout=10_000)
    expect(page.locator("#burndown svg circle.point").first).to_be_visible()
    expect(page.locator("#burndown-note")).to_be_visible()
    plot = _box(page.locator("#burndown svg rect"))
    drawn = _box(line)
    assert plot and drawn and drawn["width"] >= 0.9 * plot["width"], (drawn, plot)
    _check_layout(page, 390)
    page.close()


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
            # ...named for people ("Monthly credits, December"), the raw id in the title.
            _check_grant_names(page, api["grants"])
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
            # Runway: the 7-day pace from ClickHouse's raw ledger, the run-out date on the page.
            _check_runway(page, p, "acct-a")
            _check_layout(page, 1280)

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
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS[1280]), full_page=True)
            # A phone: cards stacked, tables scroll in their own boxes, the chart redrawn.
            _check_layout(page, 390)
            expect(page.locator("#runway")).to_have_text(re.compile(r"\S"))
            _check_grant_names(page, api["grants"])
            for table in ("#grants", "#usage-table"):
                scroller = page.locator(f"{table} >> xpath=..")
                assert scroller.evaluate("s => getComputedStyle(s).overflowX") == "auto"
            page.screenshot(path=str(SCREENSHOTS[390]), full_page=True)
            for path in SCREENSHOTS.values():
                assert path.stat().st_size > 10_000, path

            _check_loading_then_data(browser, p)
            _check_error_state(browser, p)
            _check_short_history(browser, p)

            # An account key sees its account and nothing else.
            other = browser.new_page()
            other.goto(f"{p.base_url}/account#key={KEY_B}")
            expect(other.locator("#account-select option")).to_have_count(1, timeout=10_000)
            expect(other.locator("#account-select")).to_have_value("acct-b")
            expect(other.locator("#account-select")).to_be_disabled()
        finally:
            browser.close()
