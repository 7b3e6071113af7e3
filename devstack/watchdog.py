"""Stop a local stack once the process that owns it is gone.

The test fixtures start the stack with ``start_new_session=True`` (so a Ctrl-C in pytest
doesn't kill the broker mid-teardown); if pytest itself is then killed hard (a CI time-out,
``kill -9``), this watchdog still stops Kafka and Redis instead of leaving them running.
Usage: ``python -m devstack.watchdog <owner pid> <state dir>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from devstack.process import pid_alive
from metering.config import STACK_FILE


def spawn_watchdog(owner_pid: int, state_dir: Path) -> subprocess.Popen[bytes]:
    """Start a watchdog for ``state_dir`` that acts when ``owner_pid`` exits."""
    return subprocess.Popen(
        [sys.executable, "-m", "devstack.watchdog", str(owner_pid), str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def record_pids(home: Path, pids: Mapping[str, int]) -> None:
    """Write ``pids`` (name -> pid, named as the local stack names them) under ``home`` in the
    stack file's format, so a watchdog on ``home`` stops them."""
    (home / STACK_FILE).write_text(json.dumps({"pids": dict(pids)}))


def watch(home: Path, pids: Mapping[str, int]) -> subprocess.Popen[bytes]:
    """Record ``pids`` under ``home`` and start a watchdog that stops them once this process is
    gone: a test's own cluster, when the test run is killed hard and skips its teardown."""
    record_pids(home, pids)
    return spawn_watchdog(os.getpid(), home)


def unwatch(watchdog: subprocess.Popen[bytes] | None) -> None:
    """Stop a watchdog whose processes were stopped in the normal way."""
    if watchdog is not None:
        watchdog.terminate()
        watchdog.wait(5)


def main(argv: list[str]) -> int:
    from devstack.local import (
        LocalStack,  # here: devstack.local imports the clusters, which import this
    )

    owner, state_dir = int(argv[0]), Path(argv[1])
    while pid_alive(owner):
        time.sleep(1.0)
    LocalStack(state_dir).down(timeout=10.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
