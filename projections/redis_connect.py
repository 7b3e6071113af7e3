"""The one door to Redis: the URL chooses a single server or a Redis Cluster.

``redis://``, ``rediss://`` and ``unix://`` URLs give a plain client. A ``redis+cluster://``
(or ``rediss+cluster://``) URL gives redis-py's cluster client, seeded by every host listed:
``redis+cluster://[user:password@]host:port[,host:port...]``. Listing more than one seed lets
a process start while one node is down; the client learns the rest of the cluster from any
of them. Every key of an account shares its ``{account}`` hash tag (``projections.keys``), so
each script touches one slot and the same code runs on both.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.cluster import ClusterNode

from metering.redis_url import is_cluster_url, parse_cluster_url

SyncRedis: TypeAlias = redis.Redis | redis.RedisCluster
AsyncRedis: TypeAlias = aioredis.Redis | aioredis.RedisCluster

__all__ = ["AsyncRedis", "SyncRedis", "aconnect", "connect", "is_cluster_url"]


def connect(url: str, **options: Any) -> SyncRedis:
    """A synchronous client for ``url``; ``options`` go to redis-py (timeouts and the like)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    address = parse_cluster_url(url)
    return redis.RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.seeds],  # type: ignore[no-untyped-call]
        username=address.username,
        password=address.password,
        ssl=address.tls,
        **options,
    )


def aconnect(url: str, **options: Any) -> AsyncRedis:
    """An asyncio client for ``url``; ``options`` go to redis-py."""
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **options)
    address = parse_cluster_url(url)
    return aioredis.RedisCluster(
        startup_nodes=[AsyncClusterNode(host, port) for host, port in address.seeds],
        username=address.username,
        password=address.password,
        ssl=address.tls,
        **options,
    )
