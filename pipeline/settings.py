"""Settings of one processor worker (built from CLI flags and ``metering.config.Settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Everything the app factory needs; tests override the prefix, ids, ports and timings."""

    bootstrap: str
    data_dir: Path
    prefix: str = ""
    app_id: str = "metering-processor"
    partitions: int = 6
    replication: int | None = None
    """Replicas of the changelog topics faust creates; None: 1 (``metering run processor``
    asks the cluster: 3 from three brokers on)."""
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    batch_max: int = 2000
    commit_interval_s: float = 0.1
    session_timeout_s: float = 10.0
    """A killed worker's partitions move after this long (kept low: crash recovery time)."""
    instance_id: str | None = None
    """Static group membership: a restarted worker with the same id takes its partitions back
    at once instead of waiting out the dead member's session."""
    sweep_interval_s: float | None = 60.0
    reload_interval_s: float = 2.0
    pricebook_path: Path | None = None
    plans_path: Path | None = None
    schema_dir: Path | None = None
