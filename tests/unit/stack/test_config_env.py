"""``metering.config.load_settings``: sane defaults, and bad values fail naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metering.config import ConfigError, load_settings


def test_defaults_point_at_the_local_stack(tmp_path: Path) -> None:
    settings = load_settings({"METERING_STATE_DIR": str(tmp_path)})
    assert settings.state_dir == tmp_path.resolve()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url.startswith("redis://")
    assert settings.clickhouse_url == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert settings.clickhouse_is_embedded
    assert settings.schema_registry_url is None
    assert settings.partitions == 6
    assert settings.pricebook_path is None and settings.plans_path is None  # the shipped data


def test_addresses_follow_stack_json(tmp_path: Path) -> None:
    addresses = {"kafka_bootstrap": "127.0.0.1:41001", "redis_url": "redis://127.0.0.1:41002/0"}
    (tmp_path / "stack.json").write_text(json.dumps({"addresses": addresses, "pids": {}}))
    settings = load_settings({"METERING_STATE_DIR": str(tmp_path)})
    assert settings.kafka_bootstrap == "127.0.0.1:41001"
    assert settings.redis_url == "redis://127.0.0.1:41002/0"


def test_environment_wins_over_stack_json(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"addresses": {"kafka_bootstrap": "127.0.0.1:41001"}})
    )
    env = {
        "METERING_STATE_DIR": str(tmp_path),
        "METERING_KAFKA_BOOTSTRAP": "kafka-a:9092,kafka-b:9092",
        "METERING_CLICKHOUSE_URL": "http://clickhouse:8123",
        "METERING_SCHEMA_REGISTRY_URL": "http://registry:8081",
        "METERING_PARTITIONS": "12",
    }
    settings = load_settings(env)
    assert settings.kafka_bootstrap == "kafka-a:9092,kafka-b:9092"
    assert settings.clickhouse_url == "http://clickhouse:8123"
    assert not settings.clickhouse_is_embedded
    assert settings.schema_registry_url == "http://registry:8081"
    assert settings.partitions == 12


def test_a_corrupt_stack_json_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text("{not json")
    assert load_settings({"METERING_STATE_DIR": str(tmp_path)}).kafka_bootstrap == "127.0.0.1:9092"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("METERING_KAFKA_BOOTSTRAP", "localhost"),
        ("METERING_KAFKA_BOOTSTRAP", "localhost:notaport"),
        ("METERING_KAFKA_BOOTSTRAP", "localhost:70000"),
        ("METERING_KAFKA_BOOTSTRAP", "a:9092,:9093"),
        ("METERING_REDIS_URL", "http://127.0.0.1:6379"),
        ("METERING_REDIS_URL", "redis://"),
        ("METERING_REDIS_URL", "redis+cluster://"),
        ("METERING_REDIS_URL", "redis+cluster://a:7000,b"),
        ("METERING_REDIS_URL", "redis+cluster://a:7000/3"),
        ("METERING_CLICKHOUSE_URL", "postgres://db"),
        ("METERING_CLICKHOUSE_URL", "http://"),
        ("METERING_SCHEMA_REGISTRY_URL", "registry:8081"),
        ("METERING_PARTITIONS", "0"),
        ("METERING_PARTITIONS", "-3"),
        ("METERING_PARTITIONS", "six"),
    ],
)
def test_invalid_values_fail_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"METERING_STATE_DIR": str(tmp_path), variable: value})
    assert variable in str(excinfo.value)
    assert value in str(excinfo.value)


def test_cli_reports_a_config_error_with_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    monkeypatch.setenv("METERING_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("METERING_REDIS_URL", "nonsense")
    assert main(["stack", "status"]) == 2
    assert "METERING_REDIS_URL" in capsys.readouterr().err


def test_price_book_and_plans_files_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "METERING_STATE_DIR": str(tmp_path),
        "METERING_PRICEBOOK": "/etc/metering/pricebook.yaml",
        "METERING_PLANS": "~/plans.yaml",
    }
    settings = load_settings(env)
    assert settings.pricebook_path == Path("/etc/metering/pricebook.yaml")
    assert settings.plans_path == Path("~/plans.yaml").expanduser()


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000",
        "redis+cluster://u:p@a:7000,b:7001/0",
        "rediss+cluster://a:7000",
        "unix:///run/redis.sock",
    ],
)
def test_redis_urls_of_a_cluster_or_a_socket_are_accepted(tmp_path: Path, url: str) -> None:
    settings = load_settings({"METERING_STATE_DIR": str(tmp_path), "METERING_REDIS_URL": url})
    assert settings.redis_url == url
