"""``metering env`` and the per-user pointer: the local stack is found from any directory."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from cli import env as env_cli
from metering.config import CURRENT_STACK, remember_stack, state_dir_of


def _stack(state_dir: Path, kafka: str = "127.0.0.1:40001") -> Path:
    state_dir.mkdir(parents=True)
    addresses = {"kafka_bootstrap": kafka, "redis_url": "redis://127.0.0.1:40002/0"}
    (state_dir / "stack.json").write_text(json.dumps({"addresses": addresses}))
    return state_dir


def test_a_remembered_stack_is_found_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _stack(tmp_path / "repo" / ".metering")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = {"XDG_STATE_HOME": str(tmp_path / "user")}
    assert state_dir_of(env) == (elsewhere / ".metering").resolve()  # nothing remembered yet
    remember_stack(stack, env)
    assert (tmp_path / "user" / "metering" / CURRENT_STACK).exists()
    assert state_dir_of(env) == stack.resolve()
    assert state_dir_of({**env, "METERING_STATE_DIR": str(elsewhere)}) == elsewhere.resolve()


def test_metering_env_prints_the_stack_and_a_running_demos_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _stack(tmp_path / ".metering", kafka="127.0.0.1:40123")
    for name in ("METERING_KAFKA_BOOTSTRAP", "METERING_REDIS_URL", "METERING_CLICKHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("METERING_STATE_DIR", str(stack))
    env_cli.write_demo_env(stack, {"METERING_TOPIC_PREFIX": "demo_1.", "METERING_ADMIN_KEY": "k"})
    assert env_cli.main([]) == 0
    exports = dict(
        shlex.split(line)[1].split("=", 1) for line in capsys.readouterr().out.splitlines()
    )
    assert exports["METERING_KAFKA_BOOTSTRAP"] == "127.0.0.1:40123"
    assert exports["METERING_REDIS_URL"] == "redis://127.0.0.1:40002/0"
    assert exports["METERING_TOPIC_PREFIX"] == "demo_1."
    assert exports["METERING_STATE_DIR"] == str(stack.resolve())
