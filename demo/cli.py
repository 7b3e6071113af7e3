"""``metering demo [--no-serve]``: the whole pipeline on this machine, with a story to watch.

Starts the local stack (unless ``METERING_KAFKA_BOOTSTRAP``/``METERING_REDIS_URL`` point at
one), creates a fresh namespace for this run (topic prefix, Redis key prefix, ClickHouse
database), starts every service as a child process, plays :mod:`demo.scenario`,
waits until the ledger is fully in Redis and ClickHouse, prints balances and usage, and
serves the account page until Ctrl-C. Everything it started, it stops.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cli.env import write_demo_env
from demo.report import balance_tables, checks_table, history_table, report_table, usage_table
from demo.scenario import Scenario, build_scenario, demo_plans_yaml
from demo.services import (
    ServiceSet,
    child_env,
    metering_command,
    module_command,
)
from demo.watch import LedgerWatcher
from metering.config import Settings, env_value, load_settings
from metering.net import free_port
from metering.topics import TopicNames, create_topics

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASE_TIMEOUT_S = 120.0


class DemoError(RuntimeError):
    """The demo cannot go on; the message says which part and where its log is."""


@dataclass
class Namespace:
    """Everything this run creates is under names unique to the run, so runs never mix."""

    run_id: str

    @property
    def topics(self) -> TopicNames:
        return TopicNames(f"demo{self.run_id}.")

    @property
    def redis_prefix(self) -> str:
        return f"mt:demo{self.run_id}:"

    @property
    def database(self) -> str:
        return f"demo_{self.run_id}"


@dataclass
class Demo:
    console: Console
    serve: bool
    port: int
    trickle: bool
    ns: Namespace = field(default_factory=lambda: Namespace(time.strftime("%Y%m%d%H%M%S")))
    settings: Settings | None = None
    stack_started: Any = None
    services: ServiceSet | None = None
    watcher: LedgerWatcher | None = None
    http: httpx.Client | None = None
    keys: dict[str, str] = field(default_factory=dict)
    scenario: Scenario | None = None
    demo_env: Path | None = None

    # -- setup ----------------------------------------------------------------------------

    def start_stack(self) -> Settings:
        env = os.environ
        if env_value("METERING_KAFKA_BOOTSTRAP", env) and env_value("METERING_REDIS_URL", env):
            self.console.print("[dim]using the services named by METERING_* variables[/]")
            return load_settings()
        from devstack import LocalStack

        stack = LocalStack(load_settings().state_dir)
        if stack.up(remember=True):
            self.stack_started = stack
            self.console.print(f"[green]started[/] the local stack in {stack.state_dir}")
        else:
            self.console.print(f"local stack already running in {stack.state_dir}")
        return load_settings()

    def start_services(self, settings: Settings, plans: Path, log_dir: Path) -> None:
        ns = self.ns
        prefix = ns.topics.prefix
        account_keys = ",".join(
            f"{a.account_id}:{secrets.token_urlsafe(12)}" for a in self._scenario().accounts
        )
        self.keys = {
            "api": env_value("METERING_API_KEYS") or f"demo:{secrets.token_urlsafe(16)}",
            "admin": env_value("METERING_ADMIN_KEY") or secrets.token_urlsafe(16),
            "accounts": env_value("METERING_ACCOUNT_KEYS") or account_keys,
        }
        env = child_env(
            os.environ,
            METERING_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
            METERING_REDIS_URL=settings.redis_url,
            METERING_CLICKHOUSE_URL=settings.clickhouse_url,
            METERING_STATE_DIR=str(settings.state_dir),
            METERING_PARTITIONS=str(settings.partitions),
            METERING_REDIS_PREFIX=ns.redis_prefix,
            METERING_API_KEYS=self.keys["api"],
            METERING_ADMIN_KEY=self.keys["admin"],
            METERING_ACCOUNT_KEYS=self.keys["accounts"],
        )
        self.demo_env = write_demo_env(settings.state_dir, {  # for `metering env`
            "METERING_TOPIC_PREFIX": prefix, "METERING_REDIS_PREFIX": ns.redis_prefix,
            "METERING_CLICKHOUSE_DATABASE": ns.database, "METERING_SIDECAR_PORT": str(self.port),
            "METERING_API_KEYS": self.keys["api"], "METERING_ADMIN_KEY": self.keys["admin"],
        })  # fmt: skip
        self.services = services = ServiceSet(log_dir, env, REPO_ROOT)
        embedded = settings.clickhouse_is_embedded
        services.start(
            "processor",
            metering_command(
                "run", "processor", "--topic-prefix", prefix, "--plans", str(plans),
                "--web-port", str(free_port()), "--data-dir", str(log_dir / "processor-data"),
                "--log-level", "warning",
            ),
        )  # fmt: skip
        services.start(
            "projection",
            metering_command(
                "run", "projection", "--topic-prefix", prefix,
                "--group", f"{prefix}projection", "--log-level", "warning",
            ),
        )  # fmt: skip
        if not embedded:
            services.start(
                "sink",
                metering_command(
                    "run", "sink", "--topic-prefix", prefix, "--database", ns.database,
                    "--group", f"{prefix}clickhouse-sink", "--migrate", "--max-wait-ms", "250",
                ),
            )  # fmt: skip
        services.start(
            "web",
            module_command(
                "accountpage.server", "--port", str(self.port), "--database", ns.database,
                "--topic-prefix", prefix, "--sink", "on" if embedded else "off",
                "--sink-group", f"{prefix}clickhouse-sink", *(["--migrate"] if embedded else []),
            ),
        )  # fmt: skip
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"X-API-Key": self.keys["admin"]},
            timeout=10.0,
        )

    def _scenario(self) -> Scenario:
        if self.scenario is None:
            raise RuntimeError("scenario not built yet")
        return self.scenario

    def _check_children(self) -> None:
        assert self.services is not None
        for service in self.services.dead():
            raise DemoError(
                f"{service.name} exited (code {service.proc.returncode if service.proc else '?'})"
                f"; its log {service.log_path}:\n{service.log_tail()}"
            )

    def wait(self, what: str, done: Callable[[], bool], timeout: float = PHASE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self._check_children()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def _web_ready(self) -> bool:
        assert self.http is not None
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    # -- the story ------------------------------------------------------------------------

    def play(self) -> None:
        started = time.monotonic()
        settings = self.settings = self.start_stack()
        self.scenario = scenario = build_scenario(time.time_ns() // 1_000_000)
        names = self.ns.topics
        run_dir = settings.state_dir / "demo" / self.ns.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        plans = run_dir / "plans.yaml"
        plans.write_text(demo_plans_yaml(files("metering.data").joinpath("plans.yaml").read_text()))
        self.console.print(
            f"run [bold]{self.ns.run_id}[/]: topics [cyan]{names.prefix}*[/], Redis prefix "
            f"[cyan]{self.ns.redis_prefix}[/], ClickHouse database [cyan]{self.ns.database}[/]"
        )
        story = report_table("The story")
        story.add_column("account")
        story.add_column("plan")
        story.add_column("what happens")
        for a in scenario.accounts:
            story.add_row(a.account_id, a.plan, a.story)
        self.console.print(story)
        columns = (
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console) as progress:
            task = progress.add_task("create topics", total=1)
            create_topics(settings.kafka_bootstrap, names, settings.partitions)
            progress.update(task, completed=1)

            task = progress.add_task("start processor, projection, sink, web", total=1)
            self.start_services(settings, plans, run_dir)
            self.wait("the web service (see its log)", self._web_ready, timeout=60)
            progress.update(task, completed=1)
            self.watcher = LedgerWatcher(
                settings, names.credit_ledger, settings.partitions, f"{names.prefix}demo-watch"
            ).start()
            self._publish_phases(progress, scenario, settings)
            self._wait_projected(progress)
        self.console.print(f"scenario played in {time.monotonic() - started:.1f}s")
        self.report()

    def _publish_phases(self, progress: Progress, scenario: Scenario, settings: Settings) -> None:
        from metering.sdk import CommandPublisher, UsageReporter

        names = self.ns.topics
        watcher = self.watcher
        assert watcher is not None
        wanted: dict[str, set[str]] = {a.account_id: set() for a in scenario.accounts}
        with (
            UsageReporter(topic=names.usage_events, settings=settings) as reporter,
            CommandPublisher(topic=names.credit_commands, settings=settings) as publisher,
        ):
            for phase in scenario.phases:
                task = progress.add_task(phase.title, total=phase.size)
                for command in phase.commands:
                    publisher.publish(command)
                    wanted[command.account_id].add(command.command_id)
                for event in phase.events:
                    reporter.report(event)
                    wanted[event["account_id"]].add(event["event_id"])
                publisher.flush()
                reporter.flush()
                total = sum(len(v) for v in wanted.values())
                before = total - phase.size

                def phase_done(task: Any = task, before: int = before, total: int = total) -> bool:
                    missing = watcher.missing(wanted)
                    progress.update(task, completed=max(0, total - missing - before))
                    return missing == 0

                self.wait(f"the processor to ledger '{phase.title}'", phase_done)

    def _wait_projected(self, progress: Progress) -> None:
        assert self.watcher is not None and self.http is not None
        accounts = [a.account_id for a in self._scenario().accounts]
        usage_counts = self._scenario().usage_counts()
        http = self.http
        redis_task = progress.add_task("Redis projection caught up", total=len(accounts))
        ch_task = progress.add_task("ClickHouse sink caught up", total=len(accounts))

        def projected() -> bool:
            truth = self.watcher.snapshot() if self.watcher else {}
            ok = 0
            for account in accounts:
                r = http.get(f"/v1/accounts/{account}/overview")
                if r.status_code == 200 and r.json()["seq"] == truth.get(account, (0, 0))[1]:
                    ok += 1
            progress.update(redis_task, completed=ok)
            return ok == len(accounts)

        def sunk() -> bool:
            truth = self.watcher.snapshot() if self.watcher else {}
            ok = 0
            for account in accounts:
                r = http.get(f"/v1/accounts/{account}/usage")
                if r.status_code != 200:
                    continue
                body = r.json()
                entries, max_seq = truth.get(account, (0, 0))
                if (
                    body["ledger_entries"] == entries
                    and body["ledger_max_seq"] == max_seq
                    and body["usage_events"] == usage_counts[account]
                ):
                    ok += 1
            progress.update(ch_task, completed=ok)
            return ok == len(accounts)

        self.wait("the Redis projection", projected)
        self.wait("the ClickHouse sink", sunk)

    # -- output ---------------------------------------------------------------------------

    def sidecar_check(self, account: str, feature: str, micro: int) -> dict[str, Any]:
        assert self.http is not None
        service_key = self.keys["api"].split(",")[0].partition(":")[2]
        r = self.http.post(
            "/v1/check",
            json={"account_id": account, "feature": feature, "estimated_credits": micro},
            headers={"X-API-Key": service_key},
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def report(self) -> None:
        assert self.http is not None and self.watcher is not None
        scenario = self._scenario()
        http, accounts = self.http, [a.account_id for a in scenario.accounts]
        overviews = {a: http.get(f"/v1/accounts/{a}/overview").json() for a in accounts}
        for table in balance_tables(overviews):
            self.console.print(table)
        self.console.print(
            usage_table({a: http.get(f"/v1/accounts/{a}/usage").json() for a in accounts})
        )
        self.console.print(history_table({a: self.watcher.types(a) for a in accounts}))
        asked = (
            (scenario.dry_account, "text_generation", 1_000_000),
            (scenario.overage_account, "image_generation", 250_000_000),
            ("acme", "text_generation", 5_000_000),
        )
        self.console.print(checks_table((*q, self.sidecar_check(*q)) for q in asked))
        dry = self.sidecar_check(scenario.dry_account, "text_generation", 1_000_000)
        if dry["allowed"]:
            raise DemoError(f"{scenario.dry_account} should be denied, got {dry}")
        over = overviews[scenario.overage_account]
        if over["overage_used"] <= 0:
            raise DemoError(f"{scenario.overage_account} should be in overage, got {over}")

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/account#key={self.keys['admin']}"

    def serve_forever(self) -> None:
        from metering.sdk import UsageReporter, make_usage_event

        assert self.settings is not None
        self.console.print(
            f"\n[bold]Account page:[/] {self.url()}\n"
            f"  (admin key: every account; an account's own key sees only that account: "
            f"METERING_ACCOUNT_KEYS={self.keys['accounts']})\n"
            f"  Sidecar API key: {self.keys['api'].split(',')[0].partition(':')[2]}\n"
            '  In another shell, eval "$(metering env)" points the CLI and the SDK at this run.\n'
            "  A little live usage keeps flowing so the balances move. Ctrl-C stops everything."
        )
        accounts = ["acme", "globex", "hooli"]
        with UsageReporter(topic=self.ns.topics.usage_events, settings=self.settings) as reporter:
            n = 0
            while True:
                self._check_children()
                if self.trickle:
                    n += 1
                    reporter.report(
                        make_usage_event(
                            accounts[n % len(accounts)], "text_generation",
                            {"requests": 1, "input_tokens": 1500, "output_tokens": 400},
                            model="gpt-4o", subject="research", source="demo-live",
                        )
                    )  # fmt: skip
                    reporter.flush(5)
                time.sleep(2.0)

    # -- teardown -------------------------------------------------------------------------

    def shutdown(self) -> None:
        if self.demo_env is not None:
            self.demo_env.unlink(missing_ok=True)
        if self.watcher is not None:
            self.watcher.stop()
        if self.http is not None:
            self.http.close()
        gc.collect()  # drop our Kafka clients, so none logs "connection refused" after `down`
        if self.services is not None:
            self.console.print("stopping the demo's services…")
            self.services.stop_all()
        if self.stack_started is not None:
            stopped = self.stack_started.down()
            self.console.print(f"stopped the local stack the demo started ({', '.join(stopped)})")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metering demo",
        description="Run the whole pipeline on this machine and play a realistic story: starts "
        "the local stack (unless METERING_KAFKA_BOOTSTRAP and METERING_REDIS_URL name one) and "
        "every service, sends usage, prints balances and usage, then serves the account page "
        "until Ctrl-C. Everything it started, it stops.",
    )
    parser.add_argument("--no-serve", action="store_true", help="play, print, stop and exit")
    parser.add_argument(
        "--port", type=int, default=8088, help="web port, a free one if taken (default: 8088)"
    )
    parser.add_argument("--no-trickle", action="store_true", help="no live usage while serving")
    args = parser.parse_args(argv)
    console = Console()
    # Ctrl-C and SIGTERM both end in the same clean shutdown, even when started from a
    # shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    demo = Demo(
        console=console,
        serve=not args.no_serve,
        port=free_port(args.port),
        trickle=not args.no_trickle,
    )
    code = 0
    try:
        demo.play()
        if demo.serve:
            demo.serve_forever()
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/]")
    except DemoError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        code = 1
    finally:
        demo.shutdown()
    return code
