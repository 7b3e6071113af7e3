"""The one door to Redis: the URL chooses a single server or a Redis Cluster.

``redis://``, ``rediss://`` and ``unix://`` URLs give a plain client. A ``redis+cluster://``
(or ``rediss+cluster://``) URL gives redis-py's cluster client, seeded by every host listed:
``redis+cluster://[user:password@]host:port[,host:port...]``. Listing more than one seed lets
a process start while one node is down; the client learns the rest of the cluster from any
of them. Every key of an account shares its ``{account}`` hash tag (``projections.keys``), so
each script touches one slot and the same code runs on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.cluster import ClusterNode
from redis.crc import key_slot

from metering.redis_url import is_cluster_url, parse_cluster_url

SyncRedis: TypeAlias = redis.Redis | redis.RedisCluster
AsyncRedis: TypeAlias = aioredis.Redis | aioredis.RedisCluster

CONNECTION_FAILURES: tuple[type[Exception], ...] = (
    redis.RedisError,
    OSError,  # TimeoutError is an OSError
    RuntimeError,
    AttributeError,
)
"""A call that did not reach Redis or got no answer. ``RuntimeError`` and ``AttributeError``
are what redis-py's asyncio cluster client raises when a call lands on a connection a failover
or a cancelled call closed under it (uvloop: "the handler is closed"; a writer already gone:
``None.writelines``)."""

__all__ = [
    "CONNECTION_FAILURES",
    "AsyncRedis",
    "SyncRedis",
    "aconnect",
    "aconnect_cluster",
    "connect",
    "is_cluster_url",
    "keep_slot_map_fresh",
    "master_pool",
    "refresh_async_slot_map",
    "refresh_slot_map",
]


def connect(url: str, **options: Any) -> SyncRedis:
    """A synchronous client for ``url``; ``options`` go to redis-py (timeouts and the like)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    seeds, cluster_options = _cluster_options(url, options)
    nodes = [ClusterNode(host, port) for host, port in seeds]  # type: ignore[no-untyped-call]
    return redis.RedisCluster(startup_nodes=nodes, **cluster_options)


def aconnect(url: str, **options: Any) -> AsyncRedis:
    """An asyncio client for ``url``; ``options`` go to redis-py."""
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **options)
    return aconnect_cluster(url, **options)


def aconnect_cluster(url: str, **options: Any) -> aioredis.RedisCluster:
    """An asyncio cluster client for a ``redis+cluster://`` URL."""
    seeds, cluster_options = _cluster_options(url, options)
    nodes = [AsyncClusterNode(host, port) for host, port in seeds]
    return aioredis.RedisCluster(startup_nodes=nodes, **cluster_options)


def _cluster_options(
    url: str, options: dict[str, Any]
) -> tuple[tuple[tuple[str, int], ...], dict[str, Any]]:
    """A cluster URL's seeds, and the client options it names (credentials, TLS) with
    ``options``."""
    address = parse_cluster_url(url)
    named = {"username": address.username, "password": address.password, "ssl": address.tls}
    return address.seeds, {**named, **options}


def master_pool(client: redis.RedisCluster, tag: str) -> tuple[str, Any]:
    """The name and connection pool of the master that serves hash tag ``tag``'s slot now, for
    callers that stream hand-packed commands to it (``projections.apply``)."""
    node = client.nodes_manager.get_node_from_slot(key_slot(tag.encode("utf-8")))
    return node.name, client.get_redis_connection(node).connection_pool


def refresh_slot_map(client: redis.RedisCluster) -> None:
    """Ask the cluster for its slot map again (after a redirect or a dead master); a cluster
    with no node answering yet is left for the next try."""
    with contextlib.suppress(redis.RedisError):
        client.nodes_manager.initialize()  # type: ignore[no-untyped-call]


async def refresh_async_slot_map(cluster: aioredis.RedisCluster) -> BaseException | None:
    """Rebuild an asyncio cluster client's slot map if it marked the map stale (a no-op
    otherwise), with seconds to finish; the error when no node answered."""
    try:
        async with asyncio.timeout(5.0):
            await cluster.initialize()
    except CONNECTION_FAILURES as exc:
        return exc
    return None


async def keep_slot_map_fresh(
    cluster: aioredis.RedisCluster, log: logging.Logger, interval_s: float = 0.1
) -> None:
    """Keep an asyncio cluster client's slot map fresh outside the request path (a task).

    After a connection error the client marks its map stale and the next call rebuilds it
    first; under a short request deadline (the sidecar's 30 ms) that rebuild can be cut every
    time, and every answer would stay degraded long after the replica took over. Here the
    rebuild gets seconds, and calls wait for it instead of racing it.
    """
    failing = False
    while True:
        error = await refresh_async_slot_map(cluster)
        if error is not None and not failing:
            log.warning("redis cluster slot map refresh failed (%s); retrying", error)
        elif error is None and failing:
            log.info("redis cluster slot map refreshed")
        failing = error is not None
        await asyncio.sleep(interval_s)
