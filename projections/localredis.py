"""A throwaway redis-server on a free port, for the benchmark and tests that must kill Redis.

It runs without persistence in a temp dir; ``stop()`` kills exactly the process it started.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from metering.net import free_port
from metering.stack.redis import RedisNode


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
