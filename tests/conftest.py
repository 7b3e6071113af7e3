"""Shared fixtures: one real Kafka + Redis (+ ClickHouse URL) per test session.

Where the services come from, in order:
1. ``METERING_KAFKA_BOOTSTRAP`` and ``METERING_REDIS_URL`` set in the environment: used as is
   (``METERING_CLICKHOUSE_URL`` too, else an embedded chDB dir in the session's tmp dir);
2. a Docker engine that answers a ping: testcontainers' Kafka, Redis and ClickHouse;
3. otherwise the local stack (``devstack.LocalStack``) in a tmp state dir, started once
   and stopped at the end of the session.

Nothing starts until a test asks for one of these fixtures, so unit-only runs stay fast.
While the session's stack is up, the ``METERING_*`` variables point at it, so code that calls
``load_settings()`` and subprocesses such as ``metering run processor`` find it too.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack import LocalStack
from devstack.watchdog import spawn_watchdog
from metering.topics import TopicNames, create_topics, delete_topics

TEST_PARTITIONS = 6


@dataclass
class Stack:
    """The session's services. ``local`` is set only for the local stack (restartable broker)."""

    kafka_bootstrap: str
    redis_url: str
    clickhouse_url: str
    kind: str
    """``env``, ``docker`` or ``local``."""
    state_dir: Path
    local: LocalStack | None = None
    _closers: list[Any] = field(default_factory=list, repr=False)

    def restart_kafka(self, downtime: float = 0.0, kill: bool = False) -> None:
        """Stop and restart the broker on the same ports and data (local stack only)."""
        if self.local is None:
            pytest.skip(f"broker restarts need the local stack, not {self.kind}")
        self.local.restart_kafka(downtime=downtime, kill=kill)

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        self._closers.clear()


def _docker_answers() -> bool:
    """True when a Docker engine answers a ping within a couple of seconds."""
    if os.environ.get("METERING_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _start_docker(stack_dir: Path) -> Stack:
    """Kafka (KRaft), Redis and a ClickHouse server in containers via testcontainers."""
    from testcontainers.community.clickhouse import ClickHouseContainer
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.redis import RedisContainer

    closers: list[Any] = []
    try:
        kafka = KafkaContainer("confluentinc/cp-kafka:7.7.1").with_kraft()
        kafka.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        kafka.with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        kafka.with_env("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "6")
        kafka.start(timeout=120)
        closers.append(kafka.stop)
        redis = RedisContainer("redis:7").start()
        closers.append(redis.stop)
        clickhouse = ClickHouseContainer("clickhouse/clickhouse-server:24.8").start()
        closers.append(clickhouse.stop)
    except Exception:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()
        raise
    redis_host = redis.get_container_host_ip()
    redis_port = redis.get_exposed_port(6379)
    ch_host = clickhouse.get_container_host_ip()
    ch_port = clickhouse.get_exposed_port(8123)
    return Stack(
        kafka_bootstrap=kafka.get_bootstrap_server(),
        redis_url=f"redis://{redis_host}:{redis_port}/0",
        clickhouse_url=(
            f"http://{clickhouse.username}:{clickhouse.password}@{ch_host}:{ch_port}/{clickhouse.dbname}"
        ),
        kind="docker",
        state_dir=stack_dir,
        _closers=closers,
    )


def _start_local(stack_dir: Path) -> Stack:
    local = LocalStack(stack_dir)
    # Stops the stack even if this pytest process is killed hard and skips its teardown.
    watchdog = spawn_watchdog(os.getpid(), stack_dir)
    try:
        local.up()
    except BaseException:
        local.down(timeout=10.0)
        watchdog.terminate()
        raise

    def close() -> None:
        local.down(timeout=15.0)
        watchdog.terminate()
        watchdog.wait(5)

    return Stack(
        kafka_bootstrap=local.kafka_bootstrap,
        redis_url=local.redis_url,
        clickhouse_url=local.clickhouse_url,
        kind="local",
        state_dir=stack_dir,
        local=local,
        _closers=[close],
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's Kafka, Redis and ClickHouse addresses (see the module docstring)."""
    stack_dir = tmp_path_factory.mktemp("stack")
    env_kafka = os.environ.get("METERING_KAFKA_BOOTSTRAP")
    env_redis = os.environ.get("METERING_REDIS_URL")
    env_clickhouse = os.environ.get("METERING_CLICKHOUSE_URL")
    if env_kafka and env_redis:
        found = Stack(
            kafka_bootstrap=env_kafka,
            redis_url=env_redis,
            clickhouse_url=env_clickhouse or f"chdb://{stack_dir / 'clickhouse'}",
            kind="env",
            state_dir=stack_dir,
        )
    elif _docker_answers():
        found = _start_docker(stack_dir)
    else:
        found = _start_local(stack_dir)
    # Addresses given in the environment win over what was started for the others.
    found.kafka_bootstrap = env_kafka or found.kafka_bootstrap
    found.redis_url = env_redis or found.redis_url
    found.clickhouse_url = env_clickhouse or found.clickhouse_url

    overrides = {
        "METERING_KAFKA_BOOTSTRAP": found.kafka_bootstrap,
        "METERING_REDIS_URL": found.redis_url,
        "METERING_CLICKHOUSE_URL": found.clickhouse_url,
    }
    if "METERING_STATE_DIR" not in os.environ:
        overrides["METERING_STATE_DIR"] = str(stack_dir)
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield found
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        found.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Stack) -> str:
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster (3 masters, 3 replicas) for the session: ``METERING_TEST_REDIS_CLUSTER_URL``
    (a ``redis+cluster://`` URL), else six local ``redis-server`` nodes (both with and
    without Docker: redis-server is installed by ``make deps``), stopped at the end."""
    env_url = os.environ.get("METERING_TEST_REDIS_CLUSTER_URL")
    if env_url:
        yield env_url
        return
    from devstack.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def clickhouse_url(stack: Stack) -> str:
    return stack.clickhouse_url


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[TopicNames]:
    """This test's own topics (unique prefix, 6 partitions each), deleted afterwards."""
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    create_topics(kafka_bootstrap, names, TEST_PARTITIONS)
    yield names
    # Keep the broker small over a long session; a failed delete must not fail the test.
    with contextlib.suppress(Exception):
        delete_topics(kafka_bootstrap, names, timeout=5.0)
