"""The demo's child processes: start, watch, and stop them (only the ones it started).

Each child gets its own session (``start_new_session``) so a terminal Ctrl-C reaches only
the demo, which then stops the children in order: SIGTERM, a grace period, SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Service:
    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class ServiceSet:
    """Children of this demo run, stopped in reverse start order."""

    log_dir: Path
    env: dict[str, str]
    cwd: Path
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str]) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        service = Service(name, list(args), self.log_dir / f"{name}.log")
        service.start(self.env, self.cwd)
        self.services.append(service)
        return service

    def dead(self) -> list[Service]:
        return [s for s in self.services if not s.alive()]

    def stop_all(self) -> None:
        # SIGTERM everyone first so they shut down in parallel, then wait for each.
        for service in self.services:
            if service.alive() and service.proc is not None:
                service.proc.send_signal(signal.SIGTERM)
        for service in reversed(self.services):
            service.stop()


def metering_command(*words: str) -> list[str]:
    """``python -m cli.main WORDS``: the same interpreter and code as this process."""
    return [sys.executable, "-m", "cli.main", *words]


def module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def child_env(base: Mapping[str, str], **overrides: str) -> dict[str, str]:
    env = dict(base)
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
