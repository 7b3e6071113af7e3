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
import os
import shutil
import sys
from argparse import SUPPRESS
from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path

from metering.config import load_settings
from metering.logs import CalmLogs, kafka_probe
from metering.topics import (
    TopicError,
    add_topic_prefix_argument,
    cluster_replication,
    ensure_topics,
)
from pipeline.engine_adapter import file_source
from pipeline.logs import logging_config
from pipeline.settings import ProcessorConfig

log = logging.getLogger("pipeline.worker")


DESCRIPTION = """\
Run one processor worker: it prices usage events into the credit ledger, exactly once.
Start several with the same --app-id to share the partitions. Each worker serves
/metrics on --web-host:--web-port.
"""


def parse_config(argv: list[str]) -> tuple[ProcessorConfig, str]:
    settings = load_settings()
    p = argparse.ArgumentParser(prog="metering run processor", description=DESCRIPTION)
    add_topic_prefix_argument(p)
    p.add_argument("--prefix", dest="topic_prefix", default=SUPPRESS, help=SUPPRESS)  # old name
    p.add_argument(
        "--app-id",
        metavar="ID",
        default=None,
        help="consumer group and app id; workers with the same id share the work "
        "(default: PREFIX + metering-processor)",
    )
    p.add_argument(
        "--bootstrap",
        default=settings.kafka_bootstrap,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: METERING_KAFKA_BOOTSTRAP, else the local stack)",
    )
    p.add_argument(
        "--partitions",
        metavar="N",
        type=int,
        default=settings.partitions,
        help="partitions of the keyed topics (default: METERING_PARTITIONS, else 6)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="local table state, wiped at start (default: under the state dir)",
    )
    p.add_argument(
        "--web-host",
        metavar="HOST",
        default="127.0.0.1",
        help="host of the /metrics page (default: 127.0.0.1)",
    )
    p.add_argument(
        "--web-port",
        metavar="PORT",
        type=int,
        default=6066,
        help="port of the /metrics page (default: 6066)",
    )
    p.add_argument(
        "--replication",
        metavar="N",
        type=int,
        default=None,
        help="replicas of the state changelog topics it creates (default: 3 on a cluster of "
        "three brokers or more, else 1, as `metering topics create`)",
    )
    p.add_argument(
        "--batch-max",
        metavar="N",
        type=int,
        default=2000,
        help="most records processed in one batch (default: 2000)",
    )
    p.add_argument(
        "--commit-interval",
        metavar="SECONDS",
        type=float,
        default=0.1,
        help="seconds between transaction commits (default: 0.1)",
    )
    p.add_argument(
        "--session-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="seconds before a dead worker's partitions move to the others (default: 10)",
    )
    p.add_argument(
        "--instance-id",
        metavar="ID",
        default=None,
        help="static group membership id: a worker restarted with the same id takes its "
        "partitions back at once (default: none)",
    )
    p.add_argument(
        "--sweep-interval",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="seconds between sweeps for expiry and period resets; 0 turns them off (default: 60)",
    )
    p.add_argument(
        "--reload-interval",
        metavar="SECONDS",
        type=float,
        default=2.0,
        help="seconds between checks for a changed price book or plans file (default: 2)",
    )
    p.add_argument(
        "--pricebook",
        metavar="FILE",
        type=Path,
        default=settings.pricebook_path,
        help="price book file (default: METERING_PRICEBOOK, else the shipped one)",
    )
    p.add_argument(
        "--plans",
        metavar="FILE",
        type=Path,
        default=settings.plans_path,
        help="plans file (default: METERING_PLANS, else the shipped one)",
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        default="info",
        help="debug, info, warning or error (default: info)",
    )
    p.add_argument("--loglevel", dest="log_level", default=SUPPRESS, help=SUPPRESS)  # old name
    a = p.parse_args(argv)
    a.app_id = a.app_id or f"{a.topic_prefix}metering-processor"
    data_dir = a.data_dir or settings.state_dir / "processor" / f"{a.app_id}-{a.web_port}"
    config = ProcessorConfig(
        bootstrap=a.bootstrap,
        data_dir=data_dir,
        prefix=a.topic_prefix,
        app_id=a.app_id,
        partitions=a.partitions,
        replication=a.replication,
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
    return config, a.log_level


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
        "--topic-prefix",
        prefix,
        "--partitions",
        str(partitions),
        "--web-port",
        str(web_port),
        "--data-dir",
        str(data_dir),
        *options,
    ]


# faust reads these variables when it builds the app, and they win over the settings this
# command passes: WEB_PORT=8000 in the environment would silently replace --web-port.
FAUST_WEB_ENV: tuple[str, ...] = ("WEB_PORT", "WEB_HOST", "WEB_BIND")


def drop_faust_web_env(
    config: ProcessorConfig, environ: MutableMapping[str, str] | None = None
) -> None:
    """Remove faust's web variables from ``environ`` (``os.environ``) so the flags apply;
    log one WARNING when a removed value differs from its flag."""
    environ = os.environ if environ is None else environ
    flags = {
        "WEB_PORT": ("--web-port", str(config.web_port)),
        "WEB_HOST": ("--web-host", config.web_host),
        "WEB_BIND": ("--web-host", config.web_host),
    }
    ignored = []
    for name in FAUST_WEB_ENV:
        value = environ.pop(name, None)
        flag, used = flags[name]
        if value is not None and value.strip() != used:
            ignored.append(f"{name}={value} (using {flag} {used})")
    if ignored:
        log.warning("ignoring faust's web environment variables: %s", ", ".join(ignored))


def main(argv: list[str]) -> int:
    config, loglevel = parse_config(argv)
    if config.replication is None:
        try:
            replication = cluster_replication(config.bootstrap, timeout=60.0)
        except TopicError as exc:
            print(
                f"metering run processor: {exc} (asked to choose the changelogs' replication; "
                "--replication N skips the question)",
                file=sys.stderr,
                flush=True,
            )
            return 2
        config = replace(config, replication=replication)
    calm = CalmLogs("processor", kafka_probe(config.bootstrap))  # a quiet log in an outage
    logging.config.dictConfig(logging_config(loglevel, calm))
    drop_faust_web_env(config)
    shutil.rmtree(config.data_dir, ignore_errors=True)
    config.data_dir.mkdir(parents=True, exist_ok=True)

    from pipeline.runtime import UnsupportedFaustVersion, build_app, run_worker

    try:
        built = build_app(config, file_source(config))
    except UnsupportedFaustVersion as exc:
        print(f"metering run processor: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        ensure_topics(config.bootstrap, built.group_topics(), config.replication or 1, timeout=60.0)
    except TopicError as exc:
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
    run_worker(built, loglevel, calm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
