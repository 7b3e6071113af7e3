"""``metering env``: the ``METERING_*`` exports that reach the local system from any shell.

``eval "$(metering env)"`` points a shell, and every command, SDK snippet and library call
started from it, at the stack ``metering stack up`` (or the demo) started, wherever that was;
while a demo runs, also at the demo's run (its topic and Redis prefixes and its keys).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from metering.config import DEMO_ENV, env_value, load_settings


def exports() -> dict[str, str]:
    """The variables, in the order they are printed."""
    settings = load_settings()
    found = {
        "METERING_STATE_DIR": str(settings.state_dir),
        "METERING_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "METERING_REDIS_URL": settings.redis_url,
        "METERING_CLICKHOUSE_URL": settings.clickhouse_url,
        "METERING_SIDECAR_PORT": env_value("METERING_SIDECAR_PORT", default="8088"),
    }
    try:
        demo = (settings.state_dir / DEMO_ENV).read_text()
    except OSError:
        return found
    for line in demo.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("METERING_"):
            found[name] = value
    return found


def write_demo_env(state_dir: Path, values: dict[str, str]) -> Path:
    """Record a running demo's names and keys for :func:`exports` (the demo removes the file
    when it stops)."""
    path = state_dir / DEMO_ENV
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="metering env",
        description="Print the METERING_* exports of the running local stack (and of a "
        'running demo): eval "$(metering env)" points a shell at it from any directory.',
    ).parse_args(argv)
    for name, value in exports().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0
