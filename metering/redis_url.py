"""Redis URLs: which names a Redis Cluster, and its seed nodes (no I/O, no redis-py).

``redis+cluster://[user:password@]host:port[,host:port...][/0]`` (``rediss+cluster://`` with
TLS) names a Redis Cluster by seed nodes; every other URL is redis-py's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""Cluster URL scheme -> TLS."""


class RedisUrlError(ValueError):
    """A Redis URL this module cannot read."""


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """What a cluster URL names: its seed nodes and credentials."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterAddress:
    """``redis+cluster://[user:pass@]h1:p1[,h2:p2...][/0]``; a database other than 0 is refused
    (a cluster has only database 0)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise RedisUrlError(f"not a cluster URL: {url!r}")
    netloc, _, path = rest.partition("/")
    if path.split("?", 1)[0] not in ("", "0"):
        raise RedisUrlError(f"a Redis Cluster has only database 0, not {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    seeds = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise RedisUrlError(f"cluster seed {item!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    return ClusterAddress(tuple(seeds), username, password, CLUSTER_SCHEMES[scheme.lower()])
