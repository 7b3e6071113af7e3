"""The local Kafka broker: jar resolution, config, storage format, start and readiness.

Kafka 4.1 runs as one KRaft process (broker and controller) straight from the Maven jars,
so the stack needs only a JDK and Maven, no tarball download and no Docker.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from devstack.process import pid_alive, port_open, spawn
from metering.config import env_value

KAFKA_VERSION = "4.1.2"
MAIN_CLASS = "kafka.Kafka"
"""Also the marker that identifies our broker's pid in ``/proc/<pid>/cmdline``."""

HEAP_ALONE = ("-Xms256m", "-Xmx512m")
HEAP_IN_CLUSTER = ("-Xms128m", "-Xmx384m")
"""Three JVMs share the machine in a 3-broker cluster: smaller heaps each."""

JVM_OPTS = (
    # Two cores and a small heap: the serial collector has the least overhead and no
    # concurrent threads competing with the pipeline. Full C2 stays on for throughput.
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


class KafkaError(RuntimeError):
    """The broker could not be resolved, formatted or started."""


def libs_dir() -> Path:
    """Where the broker's jars are cached: ``$METERING_KAFKA_LIBS`` or the user cache."""
    override = env_value("METERING_KAFKA_LIBS")
    if override:
        return Path(override).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "metering" / f"kafka-{KAFKA_VERSION}" / "libs"


def _resource_text(name: str) -> str:
    return resources.files("devstack").joinpath(name).read_text()


def _pom_digest() -> str:
    return hashlib.sha256(_resource_text("pom.xml").encode()).hexdigest()


def jars_present(libs: Path) -> bool:
    """True when ``libs`` holds a complete resolution of the current pom."""
    marker = libs / ".resolved"
    try:
        return marker.read_text().strip() == _pom_digest()
    except OSError:
        return False


def ensure_jars(libs: Path | None = None) -> Path:
    """Resolve the broker's jars with Maven into ``libs`` unless already there; idempotent.

    Resolves into a sibling temp dir and renames it into place, so an interrupted run never
    leaves a half-filled directory that looks complete.
    """
    libs = libs or libs_dir()
    if jars_present(libs):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaError("Maven (mvn) is needed to resolve the Kafka jars: apt-get install maven")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent, prefix=".resolve-") as work:
        pom = Path(work) / "pom.xml"
        pom.write_text(_resource_text("pom.xml"))
        out = Path(work) / "libs"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(out.glob("kafka_2.13-*.jar")):
            tail = (result.stdout + result.stderr)[-2000:]
            raise KafkaError(f"mvn could not resolve the Kafka jars:\n{tail}")
        (out / ".resolved").write_text(_pom_digest() + "\n")
        if libs.exists():
            shutil.rmtree(libs)
        out.rename(libs)
    return libs


def java_bin() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaError("a JDK (java >= 17) is needed to run Kafka: apt-get install default-jdk")
    return java


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID as 22 chars of URL-safe base64, like StorageTool's.

    Like Kafka's own ``Uuid.randomUuid()``, ids starting with ``-`` are drawn again: the
    storage tool's argument parser would take one for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """One broker+controller process: its ports and where its files live.

    Alone (``voters`` empty) it is its own KRaft quorum (``--standalone``); in a cluster every
    node lists the same ``voters`` (node id, controller port) and is formatted with the same
    ``cluster_id``, a static quorum.
    """

    home: Path
    broker_port: int
    controller_port: int
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()

    @property
    def in_cluster(self) -> bool:
        return len(self.voters) > 1

    @property
    def replication(self) -> int:
        """Replicas of every topic by default: one per node, at most 3."""
        return min(3, len(self.voters)) if self.in_cluster else 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.home / "logs" / "stdout.log"

    def write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        if self.in_cluster:
            quorum = "controller.quorum.voters=" + ",".join(
                f"{node}@127.0.0.1:{port}" for node, port in self.voters
            )
        else:
            quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"
        text = _resource_text("server.properties").format(
            broker_port=self.broker_port,
            controller_port=self.controller_port,
            data_dir=self.data_dir,
            node_id=self.node_id,
            quorum=quorum,
            replication=self.replication,
            min_isr=2 if self.replication >= 3 else 1,
        )
        self.config_file.write_text(text)
        (self.home / "log4j2.xml").write_text(_resource_text("log4j2.xml"))

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        return [
            java_bin(),
            *(HEAP_IN_CLUSTER if self.in_cluster else HEAP_ALONE),
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def format_storage(self, libs: Path, cluster_id: str | None = None) -> None:
        """Format the KRaft log dir once: alone ``--standalone`` (this node is the whole
        quorum); in a cluster with the cluster's id (the static quorum is in the config)."""
        if self.formatted():
            return
        alone = () if self.in_cluster else ("--standalone",)
        cmd = self._java(
            libs,
            "kafka.tools.StorageTool",
            "format",
            *alone,
            "-t",
            cluster_id or new_cluster_id(),
            "-c",
            str(self.config_file),
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KafkaError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")

    def start(self, libs: Path) -> int:
        """Launch the broker detached; returns its pid (readiness is :meth:`wait_ready`)."""
        proc = spawn(
            self._java(libs, MAIN_CLASS, str(self.config_file)), self.stdout_file, self.home
        )
        return proc.pid

    def wait_ready(self, pid: int, timeout: float = 90.0, brokers: int = 1) -> None:
        """Block until the broker answers a metadata request listing ``brokers`` brokers."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.broker_port):
            self._check(pid, deadline)
            time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 2})
        while True:
            self._check(pid, deadline)
            try:
                metadata = admin.list_topics(timeout=2.0)
            except Exception:
                time.sleep(0.1)
                continue
            if len(metadata.brokers) >= brokers:
                return
            time.sleep(0.1)

    def _check(self, pid: int, deadline: float) -> None:
        if not pid_alive(pid):
            raise KafkaError(f"kafka exited during startup; see {self.log_file}\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise KafkaError(f"kafka did not become ready in time; see {self.log_file}")

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in (self.stdout_file, self.log_file):
            try:
                parts.append(path.read_text(errors="replace")[-chars:])
            except OSError:
                continue
        return "\n".join(parts)
