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

from metering.redis_url import RedisUrlError, is_cluster_url, parse_cluster_url


class ConfigError(ValueError):
    """A ``METERING_*`` variable holds a value the pipeline cannot use."""


class StateInUse(RuntimeError):
    """Local state (an embedded ClickHouse path) is held by another process; the message says
    which. Commands report it in one line."""


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One ``METERING_*`` variable: its default and meaning, as the README's table shows them."""

    name: str
    default: str
    meaning: str
    internal: bool = False
    """A test hook, not configuration: left out of the README."""


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar(
        "METERING_KAFKA_BOOTSTRAP",
        "the local stack's broker (from `.metering/stack.json`), else `127.0.0.1:9092`",
        "Kafka bootstrap servers",
    ),
    EnvVar(
        "METERING_REDIS_URL",
        "the local stack's Redis, else `redis://127.0.0.1:6379/0`",
        "Redis for balance projections and holds; `redis+cluster://h:p[,h:p...]` for a Redis "
        "Cluster",
    ),
    EnvVar(
        "METERING_CLICKHOUSE_URL",
        "`chdb://<state dir>/clickhouse`",
        "`chdb://PATH` embedded, or `http(s)://` a ClickHouse server",
    ),
    EnvVar(
        "METERING_CLICKHOUSE_DATABASE",
        "`metering`",
        "the ClickHouse database every component reads and writes (`--database`)",
    ),
    EnvVar(
        "METERING_SCHEMA_REGISTRY_URL",
        "unset: the file-backed registry in `schemas/`",
        "a Confluent Schema Registry",
    ),
    EnvVar(
        "METERING_STATE_DIR",
        "`.metering` if a stack runs there, else the stack `metering stack up` last started",
        "local stack data, processor state, chDB files",
    ),
    EnvVar("METERING_PARTITIONS", "`6`", "partitions of every keyed topic"),
    EnvVar(
        "METERING_PRICEBOOK",
        "the shipped `metering/data/pricebook.yaml`",
        "price book file: the processor prices with it (`--pricebook` overrides), enforcement "
        "learns the known features from it; both reload it on change",
    ),
    EnvVar(
        "METERING_PLANS",
        "the shipped `metering/data/plans.yaml`",
        "plans file of the processor (`--plans` overrides)",
    ),
    EnvVar("METERING_TOPIC_PREFIX", "empty", "prefix of every Kafka topic name (`--topic-prefix`)"),
    EnvVar("METERING_REDIS_PREFIX", "`mt:`", "prefix of every projection key in Redis"),
    EnvVar(
        "METERING_API_KEYS",
        "none (required by the sidecar)",
        "`service:key,...`: the services that may call the sidecar",
    ),
    EnvVar("METERING_ADMIN_KEY", "unset", "the account page's key that sees every account"),
    EnvVar(
        "METERING_ACCOUNT_KEYS", "empty", "`account:key,...`: account page keys, one account each"
    ),
    EnvVar(
        "METERING_FAIL_MODE",
        "`auto`",
        "`auto` / `open` / `closed`: the sidecar's answers while Redis is unreachable (`auto` "
        "denies accounts whose overage policy is `block`)",
    ),
    EnvVar(
        "METERING_FAIL_MODE_UNSEEN",
        "`closed`",
        "`closed` / `open`: the `auto` answer for an account the sidecar has not seen",
    ),
    EnvVar(
        "METERING_REDIS_DEADLINE_MS",
        "`30`",
        "how long a sidecar request waits for Redis before the fail mode answers (must fit a "
        "connect)",
    ),
    EnvVar("METERING_SIDECAR_HOST", "`127.0.0.1`", "the sidecar's (and the web service's) host"),
    EnvVar("METERING_SIDECAR_PORT", "`8088`", "the sidecar's (and the web service's) port"),
    EnvVar("METERING_WEB_HOST", "`METERING_SIDECAR_HOST`", "the web service's host"),
    EnvVar("METERING_WEB_PORT", "`METERING_SIDECAR_PORT`", "the web service's port"),
    EnvVar(
        "METERING_KAFKA_LIBS",
        "`~/.cache/metering/kafka-<version>/libs` (or under `$XDG_CACHE_HOME`)",
        "where the Kafka broker's jars are cached",
    ),
    EnvVar(
        "METERING_SINK_CRASH_AFTER_INSERT",
        "unset",
        "tests only: the sink exits right after its first insert",
        internal=True,
    ),
)
"""Every ``METERING_*`` variable any component reads: :func:`env_value` reads only these, and a
test checks that the README's configuration table is :func:`environment_table`."""

_DECLARED = {var.name: var for var in ENVIRONMENT}


def env_value(name: str, env: Mapping[str, str] | None = None, default: str = "") -> str:
    """The value of the declared variable ``name`` (``default`` when unset or empty)."""
    if name not in _DECLARED:
        raise KeyError(f"{name} is not declared in metering.config.ENVIRONMENT")
    env = os.environ if env is None else env
    return env.get(name) or default


def environment_table() -> str:
    """The README's configuration table (Markdown), from :data:`ENVIRONMENT`."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{v.name}` | {v.default} | {v.meaning} |" for v in ENVIRONMENT if not v.internal]
    return "\n".join(rows)


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
    if parsed.scheme not in ("chdb", "unix") and not parsed.hostname:
        raise ConfigError(f"{name}={value!r}: missing host")
    return value


def _redis_url(name: str, value: str) -> str:
    """A redis-py URL, or a ``redis+cluster://`` one with at least one good seed."""
    if not is_cluster_url(value):
        return _url(name, value, ("redis", "rediss", "unix"))
    try:
        parse_cluster_url(value)
    except RedisUrlError as exc:
        raise ConfigError(f"{name}={value!r}: {exc}") from None
    return value


def _positive_int(name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name}={value!r}: expected a positive integer")
    return int(value)


CURRENT_STACK = "current-stack"
"""File in the per-user state directory naming the state dir of the stack ``metering stack
up`` (or the demo) last started, so the CLI and the SDK find it from any directory."""
DEMO_ENV = "demo.env"
"""File in the state dir where a running demo writes the ``METERING_*`` exports of its run."""


def user_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Per-user state (``$XDG_STATE_HOME/metering``, default ``~/.local/state/metering``)."""
    env = os.environ if env is None else env
    return Path(env.get("XDG_STATE_HOME") or "~/.local/state").expanduser() / "metering"


def state_dir_of(env: Mapping[str, str]) -> Path:
    """``METERING_STATE_DIR``; else ``./.metering`` when a stack was started here; else the
    stack ``metering stack up`` last started anywhere (its pointer in :func:`user_state_dir`);
    else ``./.metering``."""
    explicit = env.get("METERING_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = Path(DEFAULT_STATE_DIR).resolve()
    if (here / STACK_FILE).exists():
        return here
    try:
        pointed = Path((user_state_dir(env) / CURRENT_STACK).read_text().strip())
    except OSError:
        return here
    return pointed if (pointed / STACK_FILE).exists() else here


def remember_stack(state_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """Point :func:`state_dir_of` at ``state_dir`` from any directory (best effort)."""
    try:
        home = user_state_dir(env)
        home.mkdir(parents=True, exist_ok=True)
        (home / CURRENT_STACK).write_text(f"{state_dir.resolve()}\n")
    except OSError:
        pass


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming the bad variable."""
    env = os.environ if env is None else env
    state_dir = state_dir_of(env)
    registry = env.get("METERING_SCHEMA_REGISTRY_URL") or None
    local = _local_stack_addresses(state_dir)
    return Settings(
        kafka_bootstrap=_bootstrap(
            "METERING_KAFKA_BOOTSTRAP",
            env.get("METERING_KAFKA_BOOTSTRAP", local.get("kafka_bootstrap", "127.0.0.1:9092")),
        ),
        redis_url=_redis_url(
            "METERING_REDIS_URL",
            env.get("METERING_REDIS_URL", local.get("redis_url", "redis://127.0.0.1:6379/0")),
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
