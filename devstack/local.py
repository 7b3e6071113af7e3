"""``LocalStack``: start, inspect, stop and restart the local Kafka + Redis by recorded pid.

State lives in the state dir: ``kafka/`` (config, KRaft data, logs) or ``kafka-cluster/``
(three nodes, for ``up --kafka-brokers 3``), ``redis/`` (AOF, log) or ``redis-cluster/`` (six
nodes, for ``up --redis-cluster``), and ``stack.json`` with the run-time addresses, ports and
pids. ``metering.config`` reads
``addresses`` from that file, so every command follows the ports chosen at ``up``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import kafka as kafka_mod
from devstack import process
from devstack import redis as redis_mod
from devstack.kafka_cluster import KafkaBrokers
from devstack.redis import RedisNode
from devstack.redis_cluster import ClusterNodes, free_node_ports
from metering.config import STACK_FILE, remember_stack
from metering.net import free_port


class StackError(RuntimeError):
    """The local stack could not be brought up or is in an unexpected state."""


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One line of ``metering stack status``."""

    name: str
    up: bool
    address: str
    pid: int | None = None
    detail: str = ""
    state: str | None = None
    """Shown instead of up/down (ClickHouse is embedded: no process to be up or down)."""


class LocalStack:
    """The local stack rooted at one state dir. Cheap to construct: it only reads files."""

    def __init__(self, state_dir: Path | str, libs: Path | None = None) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self._libs = libs

    # -- recorded state -------------------------------------------------------------------

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE

    @property
    def clickhouse_url(self) -> str:
        return f"chdb://{self.state_dir / 'clickhouse'}"

    def read_state(self) -> dict[str, Any] | None:
        return _read_json(self.stack_file)

    def _write_state(
        self, kafka: KafkaBrokers, redis: RedisNode | ClusterNodes, pids: dict[str, int]
    ) -> None:
        ports: dict[str, Any] = {}
        if len(kafka.nodes) == 1:
            ((broker, controller),) = kafka.ports
            ports.update(kafka=broker, kafka_controller=controller)
        else:
            ports["kafka_cluster"] = kafka.ports
        if isinstance(redis, ClusterNodes):
            ports["redis_cluster"] = redis.ports
        else:
            ports["redis"] = redis.port
        data = {
            "addresses": {
                "kafka_bootstrap": kafka.bootstrap,
                "redis_url": redis.url,
                "clickhouse_url": self.clickhouse_url,
            },
            "ports": ports,
            "pids": pids,
        }
        for path, content in ((self.stack_file, data), (self.layout_file, {"ports": ports})):
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(content, indent=2) + "\n")
            os.replace(tmp, path)

    @property
    def layout_file(self) -> Path:
        """The ports of every node, kept by ``down`` (not ``--purge``): a stopped stack comes
        back as it was (a Redis Cluster's ``nodes.conf`` names its ports)."""
        return self.state_dir / "layout.json"

    def _nodes(
        self, state: dict[str, Any] | None, brokers: int = 1, redis_cluster: bool = False
    ) -> tuple[KafkaBrokers, RedisNode | ClusterNodes]:
        """The nodes recorded in ``state``, or new ones on free ports: ``brokers`` Kafka
        nodes and a Redis Cluster with ``redis_cluster``, unless ``state`` records others."""
        ports = (state or {}).get("ports", {})
        if ports.get("kafka_cluster"):
            kafka_ports = [(int(b), int(c)) for b, c in ports["kafka_cluster"]]
        elif ports.get("kafka"):
            kafka_ports = [(int(ports["kafka"]), int(ports["kafka_controller"]))]
        else:
            kafka_ports = KafkaBrokers.free_ports(brokers)
        kafka = KafkaBrokers(self.state_dir, kafka_ports)
        redis: RedisNode | ClusterNodes
        if ports.get("redis_cluster") or (redis_cluster and not ports.get("redis")):
            recorded = [int(p) for p in ports.get("redis_cluster") or ()]
            redis = ClusterNodes(self.state_dir / "redis-cluster", recorded or free_node_ports())
        else:
            redis = RedisNode(
                home=self.state_dir / "redis", port=int(ports.get("redis") or free_port())
            )
        return kafka, redis

    def _pids(self) -> dict[str, int]:
        raw = (self.read_state() or {}).get("pids", {})
        return {k: int(v) for k, v in raw.items() if isinstance(v, int)}

    def _alive(self, name: str, pid: int | None) -> bool:
        marker = kafka_mod.MAIN_CLASS if name.startswith("kafka") else redis_mod.MARKER
        return pid is not None and process.owns(pid, marker)

    @staticmethod
    def _redis_ports(redis: RedisNode | ClusterNodes) -> dict[str, int]:
        """The pid name of each Redis process (``redis``, or ``redis:<port>`` per cluster
        node) and its port."""
        if isinstance(redis, ClusterNodes):
            return {f"redis:{port}": port for port in redis.ports}
        return {"redis": redis.port}

    # -- public API -----------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        return self._address("kafka_bootstrap")

    @property
    def redis_url(self) -> str:
        return self._address("redis_url")

    def _address(self, key: str) -> str:
        value = (self.read_state() or {}).get("addresses", {}).get(key)
        if not isinstance(value, str):
            raise StackError(f"the local stack in {self.state_dir} is not up")
        return value

    def is_up(self) -> bool:
        state = self.read_state()
        if state is None:
            return False
        pids = self._pids()
        kafka, redis = self._nodes(state)
        names = [*kafka.nodes, *self._redis_ports(redis)]
        return all(self._alive(name, pids.get(name)) for name in names)

    def up(
        self,
        timeout: float = 120.0,
        *,
        remember: bool = False,
        redis_cluster: bool = False,
        kafka_brokers: int = 1,
    ) -> bool:
        """Start whatever is not running; True if anything was started, False if all was up.

        A stopped stack comes back on its recorded ports with its data (Kafka log, Redis AOF).
        ``remember``: the CLI and the SDK find this stack from any directory afterwards
        (``metering.config.remember_stack``; the command line's ``stack up`` and the demo).
        A new stack gets ``kafka_brokers`` Kafka nodes (1 or 3: ``devstack.kafka_cluster``) and,
        with ``redis_cluster``, a Redis Cluster of six nodes instead of one Redis
        (``devstack.redis_cluster``); a stack keeps the kinds it was first started with.
        """
        if remember:
            remember_stack(self.state_dir)
        state = self.read_state() or _read_json(self.layout_file)
        pids = self._pids()
        kafka, redis = self._nodes(state, kafka_brokers, redis_cluster)
        if redis_cluster and not isinstance(redis, ClusterNodes):
            raise StackError(
                f"the stack in {self.state_dir} runs a single Redis; "
                "`metering stack down --purge` first to start it with a Redis Cluster"
            )
        if len(kafka.nodes) != kafka_brokers and kafka_brokers != 1:
            raise StackError(
                f"the stack in {self.state_dir} runs {len(kafka.nodes)} Kafka broker(s); "
                f"`metering stack down --purge` first to start it with {kafka_brokers}"
            )
        kafka_down = [n for n in kafka.nodes if not self._alive(n, pids.get(n))]
        redis_ports = self._redis_ports(redis)
        redis_down = [n for n in redis_ports if not self._alive(n, pids.get(n))]
        if not (kafka_down or redis_down):
            return False
        self.state_dir.mkdir(parents=True, exist_ok=True)
        checks = []
        for name in kafka_down:
            node = kafka.nodes[name]
            checks += [(node.broker_port, "kafka"), (node.controller_port, "kafka controller")]
        checks += [(redis_ports[name], "redis") for name in redis_down]
        for port, what in checks:
            if process.port_open("127.0.0.1", port):
                raise StackError(f"{what} port {port} is taken; `metering stack down --purge`")
        if kafka_down:
            pids.update(kafka.start(kafka_mod.ensure_jars(self._libs), kafka_down))
        if isinstance(redis, ClusterNodes):
            live = {port: pids[n] for n, port in redis_ports.items() if n not in redis_down}
            started = redis.start(live)
            pids.update({n: started[port] for n, port in redis_ports.items()})
        elif redis_down:
            pids["redis"] = redis.start()
        # Record pids before waiting, so `down` can clean up after a failed start.
        self._write_state(kafka, redis, pids)
        deadline = time.monotonic() + timeout
        if isinstance(redis, ClusterNodes):
            by_port = {port: pids[n] for n, port in redis_ports.items()}
            redis.wait_formed(by_port, timeout=max(1.0, deadline - time.monotonic()))
        elif redis_down:
            redis.wait_ready(pids["redis"], timeout=max(1.0, deadline - time.monotonic()))
        kafka.wait_ready(pids, kafka_down, timeout=max(1.0, deadline - time.monotonic()))
        return True

    def status(self) -> list[ComponentStatus]:
        state = self.read_state()
        pids = self._pids()
        if state is None:
            kafka_names, kafka_at, redis_names, redis_at = ["kafka"], "-", ["redis"], "-"
        else:
            kafka, redis = self._nodes(state)
            kafka_names, kafka_at = list(kafka.nodes), kafka.bootstrap
            redis_names, redis_at = list(self._redis_ports(redis)), redis.url
        lines = [
            self._component("kafka", kafka_names, kafka_at, "brokers", pids),
            self._component("redis", redis_names, redis_at, "nodes", pids),
        ]
        lines.append(
            ComponentStatus(
                name="clickhouse",
                up=True,
                address=self.clickhouse_url,
                detail="embedded chDB, opened in-process by each component",
                state="embedded",  # no process of its own: never "up" or "down"
            )
        )
        return lines

    def _component(
        self, name: str, names: list[str], address: str, unit: str, pids: dict[str, int]
    ) -> ComponentStatus:
        """One status line for a process, or for the processes of a cluster."""
        alive = sum(self._alive(n, pids.get(n)) for n in names)
        if len(names) == 1:
            return ComponentStatus(name, alive == 1, address, pids.get(names[0]))
        detail = f"cluster: {alive} of {len(names)} {unit} running"
        return ComponentStatus(name, alive == len(names), address, detail=detail)

    def down(self, timeout: float = 30.0, purge: bool = False) -> list[str]:
        """Stop the pids this stack started (gone ones are fine); returns the names stopped."""
        stopped = []
        for name, pid in self._pids().items():
            if self._alive(name, pid):
                process.stop(pid, timeout=timeout)
                stopped.append(name)
        self.stack_file.unlink(missing_ok=True)
        if purge:
            self.layout_file.unlink(missing_ok=True)
            for sub in ("kafka", "kafka-cluster", "redis", "redis-cluster"):
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        return stopped

    # -- broker restarts (for failure tests) -----------------------------------------------

    def stop_kafka(self, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop the broker(s) (SIGTERM, or SIGKILL with ``kill``); ports and data stay."""
        pids = self._pids()
        for name, pid in pids.items():
            if name.startswith("kafka") and self._alive(name, pid):
                process.stop(pid, timeout=timeout, kill=kill)

    def start_kafka(self, timeout: float = 90.0) -> None:
        """Start the broker(s) again on the recorded ports and data; returns once they answer."""
        state = self.read_state()
        if state is None:
            raise StackError(f"the local stack in {self.state_dir} is not up")
        pids = self._pids()
        kafka, redis = self._nodes(state)
        down = [n for n in kafka.nodes if not self._alive(n, pids.get(n))]
        if not down:
            return
        pids.update(kafka.start(kafka_mod.ensure_jars(self._libs), down))
        self._write_state(kafka, redis, pids)
        kafka.wait_ready(pids, down, timeout=timeout)

    def restart_kafka(self, downtime: float = 0.0, kill: bool = False) -> None:
        """Stop the broker(s), wait ``downtime`` seconds, start them on the same ports and data."""
        self.stop_kafka(kill=kill)
        if downtime > 0:
            time.sleep(downtime)
        self.start_kafka()


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it is missing or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
