"""Stack plumbing without starting Kafka: config rendering, pids, status and down."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack import LocalStack
from devstack import kafka as kafka_mod
from devstack.kafka import KafkaNode, jars_present, new_cluster_id
from devstack.process import cmdline, owns, pid_alive, port_open, stop
from devstack.redis import RedisNode
from metering.net import free_port


def _sleeper() -> subprocess.Popen[bytes]:
    """A harmless child; returns once its command line is readable (exec has finished)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    deadline = time.monotonic() + 10
    while "time.sleep" not in cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def test_server_properties_render_ports_data_and_single_node_settings(tmp_path: Path) -> None:
    node = KafkaNode(home=tmp_path / "kafka", broker_port=41001, controller_port=41002)
    node.write_config()
    props = dict(
        line.split("=", 1)
        for line in node.config_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:41001,CONTROLLER://127.0.0.1:41002"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:41001"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:41002"
    assert props["log.dirs"] == str(node.data_dir)
    assert props["process.roles"] == "broker,controller"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert (node.home / "log4j2.xml").exists()
    assert node.bootstrap == "127.0.0.1:41001"


def test_cluster_ids_are_22_url_safe_chars_never_starting_with_dash() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_jars_cache_is_complete_only_with_the_current_pom_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERING_KAFKA_LIBS", str(tmp_path / "libs"))
    libs = kafka_mod.libs_dir()
    assert libs == (tmp_path / "libs").resolve()
    assert not jars_present(libs)
    libs.mkdir()
    (libs / ".resolved").write_text("stale\n")
    assert not jars_present(libs)
    (libs / ".resolved").write_text(kafka_mod._pom_digest() + "\n")
    assert jars_present(libs)


def test_redis_command_keeps_aof_and_no_snapshots(tmp_path: Path) -> None:
    node = RedisNode(home=tmp_path / "redis", port=41003)
    command = node.command()
    assert command[command.index("--port") + 1] == "41003"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--dir") + 1] == str(node.home)
    assert node.url == "redis://127.0.0.1:41003/0"


def test_free_port_is_not_listening() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert not port_open("127.0.0.1", port)


def test_stop_terminates_and_tolerates_gone_pids() -> None:
    proc = _sleeper()
    assert pid_alive(proc.pid)
    assert owns(proc.pid, "time.sleep")
    assert not owns(proc.pid, "kafka.Kafka")
    stop(proc.pid, timeout=5)
    assert not pid_alive(proc.pid)
    stop(proc.pid, timeout=1)  # already gone: no error


def test_status_and_down_without_a_running_stack(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    assert not stack.is_up()
    status = {line.name: line for line in stack.status()}
    assert not status["kafka"].up and not status["redis"].up
    assert status["clickhouse"].address == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert stack.down() == []


def test_down_skips_recycled_pids_and_removes_stack_json(tmp_path: Path) -> None:
    """A recorded pid now owned by another program is not ours: down must not signal it."""
    stranger = _sleeper()
    try:
        state = {
            "addresses": {"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:2/0"},
            "ports": {"kafka": 1, "kafka_controller": 2, "redis": 3},
            "pids": {"kafka": stranger.pid, "redis": 999_999_999},
        }
        (tmp_path / "stack.json").write_text(json.dumps(state))
        stack = LocalStack(tmp_path)
        assert stack.kafka_bootstrap == "127.0.0.1:1"
        assert stack.down(timeout=1) == []
        assert pid_alive(stranger.pid)
        assert not (tmp_path / "stack.json").exists()
    finally:
        stranger.kill()
        stranger.wait()
