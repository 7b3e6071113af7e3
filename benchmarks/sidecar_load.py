"""An open-loop HTTP load on the sidecar, and the sidecar itself in a child process.

Shared by ``metering bench enforce`` and the tests that load a sidecar while they break its
Redis (a pause, a cluster failover). Open loop: latency counts from the scheduled send time,
so a stalled server cannot hide its queueing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from metering.net import free_port

T = TypeVar("T")

BENCH_KEY = "bench-secret"
"""The API key the load sends and the child sidecar accepts."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One answered check of the open-loop load: when it was due and how it went."""

    due: float
    """Scheduled send time (``time.perf_counter``)."""
    body: int
    """Index of the body sent."""
    latency: float
    status: int
    allowed: bool
    degraded: bool


def check_bodies(accounts: list[str]) -> list[bytes]:
    return [
        json.dumps(
            {"account_id": a, "feature": "text_generation", "estimated_credits": 25_000}
        ).encode()
        for a in accounts
    ]


async def sidecar_load(
    port: int, bodies: list[bytes], rate: float, duration: float, conns: int = 32
) -> list[Answer]:
    """Send ``rate`` checks a second for ``duration`` seconds over ``conns`` keep-alive
    connections, cycling through ``bodies``. Open loop: latency counts from the scheduled
    send time, so a stalled server cannot hide its queueing."""
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    total = int(rate * duration)
    answers: list[Answer] = []
    start = clock() + 0.2

    async def worker(j: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(j, total, conns):
                scheduled = start + i / rate
                delay = scheduled - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = bodies[i % len(bodies)]
                writer.write(
                    b"POST /v1/check HTTP/1.1\r\nHost: bench\r\nX-API-Key: "
                    + BENCH_KEY.encode()
                    + b"\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                payload = await reader.readexactly(length)
                answers.append(
                    Answer(
                        scheduled,
                        i % len(bodies),
                        clock() - scheduled,
                        int(head[9:12]),
                        b'"allowed":true' in payload,
                        b'"degraded":true' in payload,
                    )
                )
        finally:
            writer.close()

    collecting = gc.isenabled()
    gc.disable()  # a collection in the client would be charged to the sidecar as latency
    try:
        await asyncio.gather(*(worker(j) for j in range(conns)))
    finally:
        if collecting:
            gc.enable()
    return answers


_LOAD = """
import json, sys
from benchmarks.sidecar_load import run_loop, sidecar_load
bodies = [b.encode() for b in json.load(sys.stdin)]
port, rate, duration = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
answers = run_loop(sidecar_load(port, bodies, rate, duration))
rows = [[a.due, a.body, a.latency, a.status, a.allowed, a.degraded] for a in answers]
json.dump(rows, sys.stdout)
"""


def load_in_a_fresh_process(
    port: int, bodies: list[bytes], rate: float, duration: float
) -> list[Answer]:
    """:func:`sidecar_load` from its own small process: the caller's heap and threads (a test
    process after the rest of the suite) would otherwise add their pauses to every latency.
    ``time.perf_counter`` is the system-wide monotonic clock, so due times compare."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(port), str(rate), str(duration)],
        input=json.dumps([b.decode() for b in bodies]),
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    )
    return [Answer(*row) for row in json.loads(done.stdout)]


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on uvloop when installed (uvicorn[standard] brings it).

    Latency counts from the scheduled send time, so the client's own event-loop lag would
    be charged to the sidecar; the faster loop keeps that share small.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - plain asyncio still measures, just noisier
        return asyncio.run(coro)
    return uvloop.run(coro)


@contextmanager
def running_sidecar(
    redis_url: str, prefix: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``metering run sidecar`` in a child process on a free port, up and healthy."""
    port = free_port()
    proc_env = {
        **os.environ,
        "METERING_REDIS_URL": redis_url,
        "METERING_REDIS_PREFIX": prefix,
        "METERING_API_KEYS": f"bench:{BENCH_KEY}",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run", "sidecar", "--port", str(port)],
        env=proc_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sidecar did not start")
            time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
