"""Stop a local stack once the process that owns it is gone.

The test fixtures start the stack with ``start_new_session=True`` (so a Ctrl-C in pytest
doesn't kill the broker mid-teardown); if pytest itself is then killed hard (a CI time-out,
``kill -9``), this watchdog still stops Kafka and Redis instead of leaving them running.
Usage: ``python -m devstack.watchdog <owner pid> <state dir>``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from devstack.local import LocalStack
from devstack.process import pid_alive


def spawn_watchdog(owner_pid: int, state_dir: Path) -> subprocess.Popen[bytes]:
    """Start a watchdog for ``state_dir`` that acts when ``owner_pid`` exits."""
    return subprocess.Popen(
        [sys.executable, "-m", "devstack.watchdog", str(owner_pid), str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def main(argv: list[str]) -> int:
    owner, state_dir = int(argv[0]), Path(argv[1])
    while pid_alive(owner):
        time.sleep(1.0)
    LocalStack(state_dir).down(timeout=10.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
