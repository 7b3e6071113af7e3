"""The one redis-server launcher: Debian's ``redis-server`` on a free port under a directory.

The local stack runs it with AOF (``appendonly yes``), which keeps the demo's projection across
restarts; a throwaway one (:class:`LocalRedis`, for the benches and the tests that kill
Redis) runs without persistence. RDB snapshots are always off (``save ''``): the projection can
be rebuilt from the ledger anyway.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from devstack.process import pid_alive, spawn
from metering.net import free_port

MARKER = "redis-server"
"""Identifies our Redis pid in ``/proc/<pid>/cmdline``."""


CLUSTER_OPTIONS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
)
"""A node declared failed after 2 s, so a replica takes over within a few seconds (the
default 15 s would be long in tests; a production cluster tunes this to its network)."""


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
    cluster: bool = False
    """A Redis Cluster node (``devstack.redis_cluster`` forms the cluster)."""

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
            *(CLUSTER_OPTIONS if self.cluster else ()),
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


class LocalRedis:
    """``with LocalRedis() as r: r.url`` starts redis-server and stops it on exit."""

    def __init__(self, port: int | None = None) -> None:
        self.node = RedisNode(
            Path(tempfile.mkdtemp(prefix="metering-redis-")), port or free_port(), persistent=False
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def url(self) -> str:
        return self.node.url

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.proc = self.node.spawn()
        self.node.wait_ready(self.proc.pid, timeout)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.node.home, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reachable(url: str, timeout: float = 0.3) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()
