"""Cluster URLs: seeds, credentials, TLS; everything else is redis-py's own URL."""

from __future__ import annotations

import pytest
import redis

from metering.redis_url import ClusterAddress, RedisUrlError, is_cluster_url, parse_cluster_url
from projections.redis_connect import connect


def test_a_cluster_url_names_its_seeds_credentials_and_tls() -> None:
    assert parse_cluster_url("redis+cluster://127.0.0.1:7000") == ClusterAddress(
        (("127.0.0.1", 7000),)
    )
    assert parse_cluster_url("rediss+cluster://me:s%40cret@a:7000, b:7001/0") == ClusterAddress(
        (("a", 7000), ("b", 7001)), "me", "s@cret", True
    )
    assert parse_cluster_url("redis+cluster://[::1]:7000").seeds == (("::1", 7000),)


@pytest.mark.parametrize(
    "url",
    ["redis://a:6379/0", "redis+cluster://a", "redis+cluster://a:7000/1", "redis+cluster://:1"],
)
def test_what_is_not_a_good_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(RedisUrlError):
        parse_cluster_url(url)


def test_the_scheme_chooses_the_client() -> None:
    assert is_cluster_url("REDIS+CLUSTER://a:1") and not is_cluster_url("redis://a:1")
    assert type(connect("redis://127.0.0.1:1/0")).__name__ == "Redis"  # connects lazily
    with pytest.raises(redis.RedisClusterException):  # the cluster client asks for the slots
        connect("redis+cluster://127.0.0.1:1", socket_connect_timeout=0.1)
