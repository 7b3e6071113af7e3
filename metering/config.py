"""Runtime configuration from ``METERING_*`` environment variables.

Every service reads the same :class:`Settings`. Values are validated once at start,
so a typo fails loudly with the variable's name instead of surfacing as a timeout later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A ``METERING_*`` variable holds a value the pipeline cannot use."""


DEFAULT_STATE_DIR = ".metering"
STACK_FILE = "stack.json"
"""Written by ``metering stack up`` into the state dir: the addresses it chose at run time."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Addresses of the stack's parts and where local state lives."""

    kafka_bootstrap: str
    redis_url: str
    clickhouse_url: str
    schema_registry_url: str | None
    state_dir: Path
    partitions: int
    pricebook_path: Path | None = None
    """``METERING_PRICEBOOK``: the price book file (None: the shipped one). The processor prices
    with it and the enforcement side learns the known features from it, so one variable
    configures both. Symlinks are kept (not resolved): a mounted ConfigMap swaps its target."""
    plans_path: Path | None = None
    """``METERING_PLANS``: the plans file the processor uses (None: the shipped one)."""

    @property
    def clickhouse_is_embedded(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")


def _bootstrap(name: str, value: str) -> str:
    for server in value.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}={value!r}: expected host:port[,host:port...]")
    return value


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        raise ConfigError(f"{name}={value!r}: scheme must be one of {', '.join(schemes)}")
    if parsed.scheme != "chdb" and not parsed.hostname:
        raise ConfigError(f"{name}={value!r}: missing host")
    return value


def _positive_int(name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name}={value!r}: expected a positive integer")
    return int(value)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming the bad variable."""
    env = os.environ if env is None else env
    state_dir = Path(env.get("METERING_STATE_DIR", DEFAULT_STATE_DIR)).expanduser().resolve()
    registry = env.get("METERING_SCHEMA_REGISTRY_URL") or None
    local = _local_stack_addresses(state_dir)
    return Settings(
        kafka_bootstrap=_bootstrap(
            "METERING_KAFKA_BOOTSTRAP",
            env.get("METERING_KAFKA_BOOTSTRAP", local.get("kafka_bootstrap", "127.0.0.1:9092")),
        ),
        redis_url=_url(
            "METERING_REDIS_URL",
            env.get("METERING_REDIS_URL", local.get("redis_url", "redis://127.0.0.1:6379/0")),
            ("redis", "rediss", "unix"),
        ),
        clickhouse_url=_url(
            "METERING_CLICKHOUSE_URL",
            env.get("METERING_CLICKHOUSE_URL", f"chdb://{state_dir / 'clickhouse'}"),
            ("chdb", "http", "https"),
        ),
        schema_registry_url=(
            _url("METERING_SCHEMA_REGISTRY_URL", registry, ("http", "https")) if registry else None
        ),
        state_dir=state_dir,
        partitions=_positive_int("METERING_PARTITIONS", env.get("METERING_PARTITIONS", "6")),
        pricebook_path=_optional_path(env.get("METERING_PRICEBOOK")),
        plans_path=_optional_path(env.get("METERING_PLANS")),
    )


def _optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _local_stack_addresses(state_dir: Path) -> dict[str, str]:
    """Addresses a running local stack recorded, so defaults follow its run-time ports."""
    try:
        data = json.loads((state_dir / STACK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.get("addresses", {}).items() if isinstance(v, str)}
