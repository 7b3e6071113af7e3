"""docker-compose.yml parses, and each pipeline service gets the environment it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from cli.main import COMMANDS
from metering.config import load_settings

ROOT = Path(__file__).resolve().parents[3]
PIPELINE_SERVICES = ("processor", "projection", "sink", "sidecar")
NEEDS = {
    "METERING_KAFKA_BOOTSTRAP",
    "METERING_REDIS_URL",
    "METERING_CLICKHOUSE_URL",
    "METERING_STATE_DIR",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_infrastructure_services_are_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.1")
    kafka_env = _env(services["kafka"])
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka_env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert services["redis"]["image"].startswith("redis:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server")
    for name in ("kafka", "redis", "clickhouse"):
        assert "healthcheck" in services[name], name


@pytest.mark.parametrize("name", [*PIPELINE_SERVICES, "topics"])
def test_pipeline_services_get_valid_metering_environment(
    compose: dict[str, Any], name: str
) -> None:
    services = compose["services"]
    service = services[name]
    env = _env(service)
    assert env.keys() >= NEEDS, f"{name} lacks {NEEDS - env.keys()}"
    settings = load_settings(env)  # raises ConfigError naming any bad value
    assert not settings.clickhouse_is_embedded
    # Every address names a service of this file.
    kafka_hosts = {server.rpartition(":")[0] for server in settings.kafka_bootstrap.split(",")}
    assert kafka_hosts <= services.keys()
    assert urlparse(settings.redis_url).hostname in services
    assert urlparse(settings.clickhouse_url).hostname in services
    assert service.get("build") or service.get("image", "").startswith("ai-credit-metering")


@pytest.mark.parametrize("name", [*PIPELINE_SERVICES, "topics"])
def test_pipeline_services_run_a_known_metering_command(compose: dict[str, Any], name: str) -> None:
    command = compose["services"][name]["command"]
    words = tuple(command[:2])
    assert words in COMMANDS or words[:1] in COMMANDS, command


def test_processor_runs_the_processor_and_services_wait_for_topics(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["processor"]["command"][:2] == ["run", "processor"]
    for name in PIPELINE_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully", name


def test_dockerfile_runs_the_metering_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["metering"]' in text
    assert "pip install ." in text
