"""The one redis-server launcher: Debian's ``redis-server`` on a free port under a directory.

The local stack runs it with AOF (``appendonly yes``), which keeps the demo's projection across
restarts; a throwaway one (``projections.localredis``, the benches and the tests that kill
Redis) runs without persistence. RDB snapshots are always off (``save ''``): the projection can
be rebuilt from the ledger anyway.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from metering.stack.process import pid_alive, spawn

MARKER = "redis-server"
"""Identifies our Redis pid in ``/proc/<pid>/cmdline``."""


class RedisError(RuntimeError):
    """redis-server is missing or did not start."""


def redis_server_bin() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisError("redis-server is needed: apt-get install redis-server (make deps does)")
    return path


@dataclass(frozen=True, slots=True)
class RedisNode:
    """One redis-server process: its port and directory."""

    home: Path
    port: int
    persistent: bool = True
    """AOF on (the stack) or no persistence at all (throwaway)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.home / "redis.log"

    def command(self) -> list[str]:
        return [
            redis_server_bin(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.home),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file),
        ]

    def start(self) -> int:
        return self.spawn().pid

    def spawn(self) -> subprocess.Popen[bytes]:
        self.home.mkdir(parents=True, exist_ok=True)
        return spawn(self.command(), self.home / "stdout.log", self.home)

    def wait_ready(self, pid: int, timeout: float = 20.0) -> None:
        """Block until Redis answers PING (it may first be loading its AOF)."""
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not pid_alive(pid):
                    raise RedisError(f"redis-server exited during startup; see {self.log_file}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RedisError(
                        f"redis-server did not answer PING in time; see {self.log_file}"
                    )
                time.sleep(0.05)
        finally:
            client.close()
