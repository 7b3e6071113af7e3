"""The sidecar's Redis warmed before its first request: scripts loaded, connections open.

Why: a cold sidecar meets its first burst with no connection and no script in Redis; each call
then connects, says hello and loads its script, and under the sidecar's 30 ms deadline a burst
of those timed out against a healthy Redis, opened the circuit breaker and was answered by the
fail mode. Best effort and bounded: a Redis that is down at start is the fail mode's business,
not a reason not to start.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from projections.redis_connect import CONNECTION_FAILURES, AsyncRedis
from projections.scripts import aload_all

log = logging.getLogger("metering.sidecar")

WARM_CONNECTIONS = 32
"""Connections opened at start: a burst of new callers finds them ready (the pool holds 64)."""
WARM_TIMEOUT_S = 2.0
"""The longest a start waits to warm up (a hung Redis must not hold the sidecar's start)."""


async def warm(client: AsyncRedis, pool: aioredis.BlockingConnectionPool | None) -> None:
    """Load every script and open ``WARM_CONNECTIONS`` of ``pool`` (a cluster client: the
    scripts only), within ``WARM_TIMEOUT_S``; a failure is logged, never raised."""
    try:
        async with asyncio.timeout(WARM_TIMEOUT_S):
            await aload_all(client)
            if pool is not None:
                await _open_connections(pool, WARM_CONNECTIONS)
    except CONNECTION_FAILURES as exc:  # a TimeoutError too
        log.warning("redis not warmed at start (%s); the fail mode answers until it is", exc)


async def _open_connections(pool: aioredis.BlockingConnectionPool, count: int) -> None:
    """Connect ``count`` of the pool's connections and give them back, open (every one taken
    is given back, also when a connect fails or the warm-up is cut)."""
    taken = []
    try:
        for _ in range(count):
            taken.append(await pool.get_connection())  # type: ignore[no-untyped-call]
    finally:
        for connection in taken:
            await pool.release(connection)
