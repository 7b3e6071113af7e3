"""The README is a promise: every shell command and Python snippet in its Quick start,
Operations and "Using it from your product" sections runs here, as written, and succeeds.

Like a new user, the test starts from nothing but a fresh state dir (no ``METERING_*``
variables; the session's stack is not used):

1. **Quick start.** ``make demo`` runs in the background (``make test`` is this run). The second
   block runs in a terminal of its own while the demo serves: ``eval "$(metering env)"``,
   ``metering usage`` and ``metering reconcile``, which reach the demo's embedded ClickHouse
   through its web process. Then Ctrl-C (SIGINT to the demo's process group) stops it all.
2. **Operations and "Using it from your product"**, in a second terminal: the stack and the
   services as the README starts them, then the product's snippets (grant, publish, enforce by
   ``curl`` and by the library, query), the day-to-day commands, and the stop block.

Each terminal is one bash process, so exports, ``eval`` and background jobs carry over from
block to block as they do for a user; any failing command (an ERR trap, with ``pipefail``)
fails the test with the block's output. Between blocks the test only waits, as a user would,
for the services to come up and for the ledger to reach Redis and ClickHouse. At the end it
checks that no block of those sections was left unrun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from readme_blocks import Block, blocks_under_test, sql_statements

from metering.net import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = REPO / ".venv" / "bin"
BLOCK_TIMEOUT_S = 240.0


class Shell:
    """One bash process fed block after block, like a terminal."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.log = self.workdir / "terminal.log"
        self.errors = self.workdir / "errors"
        self._n = 0
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        self._send(f"set -o pipefail; trap 'echo \"$BASH_COMMAND\" >> {self.errors}' ERR\n")

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, code: str, where: str, timeout: float = BLOCK_TIMEOUT_S) -> str:
        """Run ``code`` as if typed; return what it printed. Fails on any failing command."""
        self._n += 1
        script, done = self.workdir / f"block{self._n}.sh", self.workdir / f"done{self._n}"
        script.write_text(code + "\n")
        start = self.log.stat().st_size
        self._send(f"source {script}; echo > {done}\n")
        deadline = time.monotonic() + timeout
        while not done.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{where} did not finish:\n{self._output(start)}")
            time.sleep(0.1)
        output = self._output(start)
        if self.errors.exists():
            failed = self.errors.read_text()
            self.errors.unlink()
            pytest.fail(f"{where}: a command failed: {failed.strip()}\n{output}")
        return output

    def python(self, code: str, where: str) -> str:
        self._n += 1
        snippet = self.workdir / f"snippet{self._n}.py"
        snippet.write_text(code + "\n")
        return self.run(f"python {snippet}", where)

    def _output(self, start: int) -> str:
        with self.log.open("rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_for(
    what: str, done: Callable[[], bool], timeout: float = 120.0, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            tail = ""
            if log is not None:  # what the services said, without the polling's own output
                lines = [x for x in log.read_text(errors="replace").splitlines() if x != "[]"]
                tail = "\n".join(lines[-80:])
            pytest.fail(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.5)


def user_env(tmp_path: Path) -> dict[str, str]:
    """A fresh user's environment: no METERING_* (the session stack's are dropped), the venv's
    commands on the PATH, a state dir and a per-user dir of its own, an 80-column terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    bin_dir = str(VENV_BIN if (VENV_BIN / "metering").exists() else Path(sys.executable).parent)
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        METERING_STATE_DIR=str(tmp_path / "state"),
        XDG_STATE_HOME=str(tmp_path / "xdg"),
        METERING_SIDECAR_PORT=str(free_port()),
        COLUMNS="80",
        PYTHONUNBUFFERED="1",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = user_env(tmp_path)
    yield env
    # Whatever happened, leave no stack behind.
    subprocess.run(
        [sys.executable, "-m", "cli.main", "stack", "down"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )


class Readme:
    """The tested blocks, handed out in README order; remembers which ran."""

    def __init__(self) -> None:
        self.blocks = blocks_under_test()
        self.ran: set[int] = set()

    def take(self, section: str, language: str, contains: str = "") -> Block:
        for block in self.blocks:
            if block.line in self.ran or block.section != section:
                continue
            if (block.is_shell if language == "sh" else block.language == language) and (
                contains in block.code
            ):
                self.ran.add(block.line)
                return block
        raise AssertionError(f"no unrun {language} block in {section!r} containing {contains!r}")

    def unrun(self) -> list[str]:
        return [b.where() for b in self.blocks if b.line not in self.ran]


def commands(code: str) -> list[str]:
    """The commands of a shell block (comments and continuation lines joined)."""
    joined = code.replace("\\\n", " ")
    lines = (line.split("#")[0].strip() for line in joined.splitlines())
    return [line for line in lines if line]


def test_every_tested_block_is_a_language_the_test_runs() -> None:
    blocks = blocks_under_test()
    assert blocks, "the README lost its tested sections"
    assert {b.language for b in blocks} <= {"bash", "sh", "python", "sql"}, [
        b.where() for b in blocks if b.language not in ("bash", "sh", "python", "sql")
    ]


def quick_start(readme: Readme, env: dict[str, str], tmp_path: Path) -> None:
    first = readme.take("Quick start", "sh", "make demo")
    assert commands(first.code) == ["make test", "make demo"], first.where()
    # `make test` is the run this test is part of; `make demo` runs as a user would start it.
    demo_cmd = ["make", "-s", "demo"] if (VENV_BIN / "metering").exists() else ["metering", "demo"]
    demo_log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        demo_cmd,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=demo_log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            "the demo to serve",
            lambda: (
                "Account page:" in demo_log.read_text(errors="replace") or demo.poll() is not None
            ),
            timeout=300,
        )
        printed = demo_log.read_text(errors="replace")
        assert demo.poll() is None, printed[-5000:]
        assert "DENIED" in printed and "insufficient_credits" in printed, printed[-5000:]
        assert "Usage by subject" in printed and "Sidecar API key:" in printed
        report = printed[printed.index("The story") : printed.index("Account page:")]
        assert max(len(line) for line in report.splitlines()) <= 80, "fits 80 columns"
        assert "…" not in report, f"nothing is cut off at 80 columns:\n{report}"

        terminal = Shell("quick-start", env, tmp_path)
        try:
            block = readme.take("Quick start", "sh", "metering env")
            out = terminal.run(block.code, block.where())
            assert "acme by subject" in out and "research" in out, out
            assert "reconcile:" in out and " 0 mismatched" in out, out
        finally:
            terminal.close()
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in the demo's terminal
        code = demo.wait(120)
    printed = demo_log.read_text(errors="replace")
    assert code in (0, -signal.SIGINT), printed[-5000:]  # make dies of the SIGINT it passed on
    assert "stopped the local stack the demo started" in printed, printed[-3000:]


def operations_and_product(readme: Readme, env: dict[str, str], tmp_path: Path) -> None:
    terminal = Shell("operations", env, tmp_path)
    sidecar = f"http://127.0.0.1:{env['METERING_SIDECAR_PORT']}"
    try:
        block = readme.take("Operations", "sh", "metering run web &")
        terminal.run(block.code, block.where())
        wait_for("the web service", lambda: _answers(f"{sidecar}/healthz"))

        block = readme.take("Using it from your product", "python", "CommandPublisher")
        terminal.python(block.code, block.where())
        # The account is set up before it is used: commands and usage travel on different
        # topics, so usage sent at once could be priced before the plan arrives.
        terminal.python(WAIT_FOR_ACME_IN_REDIS, "waiting for acme's grants in Redis")
        block = readme.take("Using it from your product", "python", "UsageReporter")
        terminal.python(block.code, block.where())
        block = readme.take("Using it from your product", "python", "void_usage")
        terminal.python(block.code, block.where())
        block = readme.take("Using it from your product", "sh", "metering backfill")
        out = terminal.run(block.code, block.where())
        assert "3 to send" in out and "sent 3 events" in out, out
        assert "acme / nightly" in out, out  # the dry run's totals

        block = readme.take("Using it from your product", "sh", "curl")
        out = terminal.run(block.code, block.where())
        assert '"allowed":true' in out and '"status":"committed"' in out, out
        block = readme.take("Using it from your product", "python", "Enforcer")
        terminal.python(block.code, block.where())

        wait_for("acme's usage in ClickHouse", lambda: _has_usage(terminal), 180, terminal.log)
        block = readme.take("Using it from your product", "sql")
        out = terminal.python(sql_runner(block), block.where())
        assert "research" in out, out
        block = readme.take("Using it from your product", "python", "usage_by")
        out = terminal.python(block.code, block.where())
        assert out.startswith("research "), out

        block = readme.take("Operations", "sh", "metering reconcile")
        out = terminal.run(block.code, block.where())
        assert " 0 mismatched" in out and '"differences": 0' in out, out

        block = readme.take("Operations", "sh", "metering stack down")
        terminal.run(block.code, block.where())
        wait_for("the services to stop", lambda: not _answers(f"{sidecar}/healthz"), 60)
        out = terminal.run("metering stack status || true", "after the stop block")  # 1: down
        assert "kafka       down" in out and "redis       down" in out, out
    finally:
        terminal.close()


WAIT_FOR_ACME_IN_REDIS = """
import time
from projections.enforcement import Enforcer
enf = Enforcer.from_env()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    balance = enf.balance("acme")
    if balance is not None and balance.available > 0 and balance.plan == "growth":
        break
    time.sleep(0.5)
else:
    raise SystemExit("acme's grants never reached Redis")
"""


def sql_runner(block: Block) -> str:
    """A Python snippet that runs the block's statements through the same reader as the CLI."""
    return (
        "from consumers.query_relay import open_reader\n"
        "reader = open_reader()\n"
        f"for statement in {sql_statements(block.code)!r}:\n"
        "    for row in reader.query(statement).result_rows:\n"
        "        print(*row)\n"
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _has_usage(terminal: Shell) -> bool:
    out = terminal.run("metering usage --account acme --format json", "polling usage")
    try:
        return bool(json.loads(out[out.index("[") :]))
    except ValueError:
        return False


def test_the_readme_runs_as_written(env: dict[str, str], tmp_path: Path) -> None:
    readme = Readme()
    quick_start(readme, env, tmp_path)
    operations_and_product(readme, env, tmp_path)
    assert readme.unrun() == [], "README blocks the test does not run"
