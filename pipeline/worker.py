"""``metering run processor``: run one processor worker (several form one consumer group).

The worker wipes its local RocksDB directory at start and restores the account table from the
changelog (read_committed); later assignments do the same per partition
(``pipeline.runtime.stores``).
Local RocksDB may hold writes of a transaction that a crash aborted; faust would keep them
(see docs/processor.md), so the changelog is the only truth.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import shutil
import sys
from pathlib import Path

from metering.config import env_value, load_settings
from pipeline.engine_adapter import file_source
from pipeline.logs import logging_config
from pipeline.settings import ProcessorConfig

log = logging.getLogger("pipeline.worker")


def parse_config(argv: list[str]) -> tuple[ProcessorConfig, str]:
    settings = load_settings()
    p = argparse.ArgumentParser(prog="metering run processor")
    p.add_argument("--prefix", default=env_value("METERING_TOPIC_PREFIX"))
    p.add_argument(
        "--app-id",
        default=None,
        help="consumer group / app id (default: PREFIX + metering-processor)",
    )
    p.add_argument("--bootstrap", default=settings.kafka_bootstrap)
    p.add_argument("--partitions", type=int, default=settings.partitions)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--web-host", default="127.0.0.1")
    p.add_argument("--web-port", type=int, default=6066)
    p.add_argument("--batch-max", type=int, default=2000)
    p.add_argument("--commit-interval", type=float, default=0.1, help="seconds")
    p.add_argument("--session-timeout", type=float, default=10.0, help="seconds")
    p.add_argument("--instance-id", default=None, help="static group membership id")
    p.add_argument("--sweep-interval", type=float, default=60.0, help="seconds; 0 disables")
    p.add_argument("--reload-interval", type=float, default=2.0, help="seconds")
    p.add_argument(
        "--pricebook",
        type=Path,
        default=settings.pricebook_path,
        help="price book file (default: METERING_PRICEBOOK, else the shipped one)",
    )
    p.add_argument(
        "--plans",
        type=Path,
        default=settings.plans_path,
        help="plans file (default: METERING_PLANS, else the shipped one)",
    )
    p.add_argument("--loglevel", default="info")
    a = p.parse_args(argv)
    a.app_id = a.app_id or f"{a.prefix}metering-processor"
    data_dir = a.data_dir or settings.state_dir / "processor" / f"{a.app_id}-{a.web_port}"
    config = ProcessorConfig(
        bootstrap=a.bootstrap,
        data_dir=data_dir,
        prefix=a.prefix,
        app_id=a.app_id,
        partitions=a.partitions,
        web_host=a.web_host,
        web_port=a.web_port,
        batch_max=a.batch_max,
        commit_interval_s=a.commit_interval,
        session_timeout_s=a.session_timeout,
        instance_id=a.instance_id,
        sweep_interval_s=a.sweep_interval or None,
        reload_interval_s=a.reload_interval,
        pricebook_path=a.pricebook,
        plans_path=a.plans,
    )
    return config, a.loglevel


def worker_command(
    bootstrap: str, prefix: str, partitions: int, web_port: int, data_dir: Path, *options: str
) -> list[str]:
    """The command line of one worker process, for whatever starts workers (bench, tests)."""
    return [
        sys.executable,
        "-m",
        "pipeline.worker",
        "--bootstrap",
        bootstrap,
        "--prefix",
        prefix,
        "--partitions",
        str(partitions),
        "--web-port",
        str(web_port),
        "--data-dir",
        str(data_dir),
        *options,
    ]


def main(argv: list[str]) -> int:
    config, loglevel = parse_config(argv)
    logging.config.dictConfig(logging_config(loglevel))
    shutil.rmtree(config.data_dir, ignore_errors=True)
    config.data_dir.mkdir(parents=True, exist_ok=True)

    from pipeline.runtime import UnsupportedFaustVersion, build_app, run_worker

    try:
        built = build_app(config, file_source(config))
    except UnsupportedFaustVersion as exc:
        print(f"metering run processor: {exc}", file=sys.stderr, flush=True)
        return 2
    log.info(
        "starting processor app_id=%s prefix=%r bootstrap=%s web=%s:%d",
        config.app_id,
        config.prefix,
        config.bootstrap,
        config.web_host,
        config.web_port,
    )
    run_worker(built, loglevel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
