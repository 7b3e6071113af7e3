"""Process plumbing shared by the stack's components: free ports, spawn, liveness, stop.

The stack only ever signals pids it recorded itself, and checks a pid's command line
before signalling it, so a recycled pid never gets a stray SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(cmd: Sequence[str], log_file: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session so it outlives the CLI that started it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child, so it doesn't linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (zombies count as gone)."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state letter follows the parenthesised command name.
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"]


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' if unknown), to tell our process from a recycled pid."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def owns(pid: int, marker: str) -> bool:
    """True when ``pid`` is alive and its command line contains ``marker``."""
    if not pid_alive(pid):
        return False
    line = cmdline(pid)
    return not line or marker in line


def stop(pid: int, timeout: float = 30.0, kill: bool = False) -> None:
    """SIGTERM ``pid`` (SIGKILL with ``kill``), then SIGKILL after ``timeout``; gone is fine."""
    try:
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
