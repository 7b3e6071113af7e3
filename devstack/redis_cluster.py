"""A Redis Cluster of Debian's ``redis-server`` on one machine: 3 masters, 3 replicas.

Six :class:`~devstack.redis.RedisNode` processes in cluster mode on free local ports, formed
with ``redis-cli --cluster create --cluster-replicas 1``. A stopped cluster comes back from
each node's ``nodes.conf`` and AOF without forming again. The URL is the
``redis+cluster://`` one of ``projections.redis_connect``, listing every node as a seed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from devstack.process import owns, stop
from devstack.redis import MARKER, RedisError, RedisNode
from devstack.watchdog import unwatch, watch
from metering.net import free_port

MASTERS = 3
REPLICAS_PER_MASTER = 1
NODES = MASTERS * (1 + REPLICAS_PER_MASTER)


BUS_OFFSET = 10000
"""Each node also listens on its port + 10000 (the cluster bus)."""


def free_node_ports(count: int = NODES) -> list[int]:
    """``count`` ports whose bus port (port + 10000) is a valid port and free too."""
    ports: list[int] = []
    for port in range(20000, 55535, 7):
        if len(ports) == count:
            return ports
        if port not in ports and all(free_port(p) == p for p in (port, port + BUS_OFFSET)):
            ports.append(port)
    raise RedisError("no free ports for a Redis Cluster between 20000 and 55535")


def cluster_url(ports: Sequence[int]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def _redis_cli() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise RedisError("redis-cli is needed (Debian's redis-tools, installed with redis-server)")
    return path


class ClusterNodes:
    """The six nodes under ``home`` (``node-<port>/`` each) on ``ports``."""

    def __init__(self, home: Path, ports: Sequence[int], *, persistent: bool = True) -> None:
        if len(ports) != NODES:
            raise RedisError(f"a cluster here has {NODES} nodes, got {len(ports)} ports")
        self.home = home
        self.nodes = [
            RedisNode(home / f"node-{port}", port, persistent=persistent, cluster=True)
            for port in ports
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return cluster_url(self.ports)

    def start(self, pids: dict[int, int] | None = None) -> dict[int, int]:
        """Start the nodes not in ``pids`` (port -> pid of a live one); return every pid."""
        pids = dict(pids or {})
        for node in self.nodes:
            if not (node.port in pids and owns(pids[node.port], MARKER)):
                pids[node.port] = node.start()
        return pids

    def wait_formed(self, pids: dict[int, int], timeout: float = 60.0) -> None:
        """Wait until every node answers; form the cluster if it never was; then wait until
        every node reports ``cluster_state:ok`` and every replica's link is up."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_ready(pids[node.port], timeout=max(1.0, deadline - time.monotonic()))
        if not self._formed():
            self._create(deadline)
        while not self._healthy():
            if time.monotonic() > deadline:
                raise RedisError(f"the Redis Cluster did not become healthy; see {self.home}")
            time.sleep(0.1)

    def _info(self, node: RedisNode, section: str) -> dict[str, str]:
        """``CLUSTER INFO`` (section ``cluster``) or an ``INFO`` section, as strings."""
        client = redis.Redis(port=node.port, socket_timeout=2.0, decode_responses=True)
        try:
            if section != "cluster":
                return {str(k): str(v) for k, v in client.info(section).items()}
            text = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        finally:
            client.close()
        if isinstance(text, dict):
            return {str(k): str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)

    def _formed(self) -> bool:
        return int(self._info(self.nodes[0], "cluster").get("cluster_known_nodes", "1")) > 1

    def _healthy(self) -> bool:
        try:
            for node in self.nodes:
                if self._info(node, "cluster").get("cluster_state") != "ok":
                    return False
                replication = self._info(node, "replication")
                if (
                    replication.get("role") == "slave"
                    and replication.get("master_link_status") != "up"
                ):
                    return False
            return True
        except redis.RedisError:
            return False

    def _create(self, deadline: float) -> None:
        command = [
            _redis_cli(),
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas",
            str(REPLICAS_PER_MASTER),
            "--cluster-yes",
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=max(5.0, deadline - time.monotonic()),
            check=False,
        )
        if done.returncode != 0:
            raise RedisError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now (they change after a failover)."""
        found = []
        for node in self.nodes:
            try:
                if self._info(node, "replication").get("role") == "master":
                    found.append(node.port)
            except redis.RedisError:
                continue
        return found


class LocalRedisCluster:
    """``with LocalRedisCluster() as c: c.url``: a throwaway cluster (no persistence), for the
    tests; stopped and deleted on exit, or by a watchdog if the test run dies first."""

    def __init__(self, ports: Sequence[int] | None = None) -> None:
        home = Path(tempfile.mkdtemp(prefix="metering-redis-cluster-"))
        self.cluster = ClusterNodes(home, list(ports or free_node_ports()), persistent=False)
        self.pids: dict[int, int] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def home(self) -> Path:
        return self.cluster.home

    def start(self, timeout: float = 60.0) -> LocalRedisCluster:
        self.pids = self.cluster.start()
        self._watchdog = watch(self.home, {f"redis:{p}": pid for p, pid in self.pids.items()})
        try:
            self.cluster.wait_formed(self.pids, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, port: int) -> None:
        """kill -9 one node (a failover test)."""
        stop(self.pids[port], timeout=10.0, kill=True)

    def stop(self) -> None:
        for pid in self.pids.values():
            if owns(pid, MARKER):
                stop(pid, timeout=10.0, kill=True)
        self.pids = {}
        unwatch(self._watchdog)
        self._watchdog = None
        shutil.rmtree(self.cluster.home, ignore_errors=True)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
