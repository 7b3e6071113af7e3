"""The stack's Kafka as a set of nodes: one broker alone, or three in a static KRaft quorum.

Three nodes (``metering stack up --kafka-brokers 3``) each run broker and controller from the
same jars with smaller heaps; topics default to replication factor 3 and ``min.insync.replicas``
2, so one broker can die without stopping a transaction. Pid names in ``stack.json``:
``kafka`` alone, ``kafka:<node id>`` in a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from devstack import kafka as kafka_mod
from devstack.kafka import KafkaError, KafkaNode, new_cluster_id
from devstack.process import owns, port_open, stop
from devstack.watchdog import record_pids, unwatch, watch
from metering.net import free_port

CLUSTER_SIZES = (1, 3)


class KafkaBrokers:
    """The nodes of one stack's Kafka, by pid name."""

    def __init__(self, home: Path, ports: Sequence[tuple[int, int]]) -> None:
        """``ports``: (broker, controller) per node; one pair is a broker alone under
        ``home/kafka``, three a cluster under ``home/kafka-cluster/node-<id>``."""
        if len(ports) not in CLUSTER_SIZES:
            raise KafkaError(f"a local Kafka has 1 or 3 brokers, not {len(ports)}")
        self.root = home / ("kafka" if len(ports) == 1 else "kafka-cluster")
        voters = tuple((i + 1, controller) for i, (_, controller) in enumerate(ports))
        self.nodes = {
            (self.name(i + 1, len(ports))): KafkaNode(
                home=self.root if len(ports) == 1 else self.root / f"node-{i + 1}",
                broker_port=broker,
                controller_port=controller,
                node_id=i + 1,
                voters=voters if len(ports) > 1 else (),
            )
            for i, (broker, controller) in enumerate(ports)
        }

    @staticmethod
    def name(node_id: int, size: int) -> str:
        return "kafka" if size == 1 else f"kafka:{node_id}"

    @staticmethod
    def free_ports(count: int) -> list[tuple[int, int]]:
        return [(free_port(), free_port()) for _ in range(count)]

    @property
    def ports(self) -> list[list[int]]:
        return [[n.broker_port, n.controller_port] for n in self.nodes.values()]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    def _cluster_id(self) -> str | None:
        """One id for every node of a cluster, kept next to them (None: a broker alone)."""
        if len(self.nodes) == 1:
            return None
        path = self.root / "cluster.id"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()

    def start(self, libs: Path, names: Sequence[str]) -> dict[str, int]:
        """Configure, format (once) and launch the named nodes; their pids."""
        cluster_id = self._cluster_id()
        pids = {}
        for name in names:
            node = self.nodes[name]
            node.write_config()
            node.format_storage(libs, cluster_id)
            # The old listener's socket may linger briefly after a killed process is gone.
            deadline = time.monotonic() + 10.0
            while port_open("127.0.0.1", node.broker_port) and time.monotonic() < deadline:
                time.sleep(0.1)
            pids[name] = node.start(libs)
        return pids

    def wait_ready(self, pids: dict[str, int], names: Sequence[str], timeout: float) -> None:
        """Until each named node answers metadata listing every broker of the cluster."""
        deadline = time.monotonic() + timeout
        for name in names:
            self.nodes[name].wait_ready(
                pids[name], timeout=max(1.0, deadline - time.monotonic()), brokers=len(self.nodes)
            )


class LocalKafkaCluster:
    """``with LocalKafkaCluster() as k: k.bootstrap``: three throwaway brokers (a test's
    own, to kill one); stopped and deleted on exit, or by a watchdog if the test run dies
    first."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="metering-kafka-cluster-"))
        self.brokers = KafkaBrokers(self.home, KafkaBrokers.free_ports(3))
        self.pids: dict[str, int] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.brokers.bootstrap

    def start(self, timeout: float = 120.0) -> LocalKafkaCluster:
        libs = kafka_mod.ensure_jars()
        names = list(self.brokers.nodes)
        self.pids = self.brokers.start(libs, names)
        self._watchdog = watch(self.home, self.pids)
        try:
            self.brokers.wait_ready(self.pids, names, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, node_id: int) -> None:
        """kill -9 one broker (and controller)."""
        stop(self.pids[KafkaBrokers.name(node_id, 3)], timeout=10.0, kill=True)

    def restart(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a killed broker again on its ports and data."""
        name = KafkaBrokers.name(node_id, 3)
        self.pids.update(self.brokers.start(kafka_mod.ensure_jars(), [name]))
        record_pids(self.home, self.pids)
        self.brokers.wait_ready(self.pids, [name], timeout)

    def stop(self) -> None:
        for pid in self.pids.values():
            if owns(pid, kafka_mod.MAIN_CLASS):
                stop(pid, timeout=10.0, kill=True)
        self.pids = {}
        unwatch(self._watchdog)
        self._watchdog = None
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalKafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
