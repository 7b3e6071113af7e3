"""``metering run projection``: the Redis projection of the ledger as a process, with its
Prometheus metrics page (``--metrics-port``); see ``projections.consumer``."""

from __future__ import annotations

import argparse
import signal
import threading

from metering.logs import service_logging
from metering.metrics import serve
from metering.topics import TopicNames, add_topic_prefix_argument
from projections.consumer import ProjectionConsumer, codec_decoder, log
from projections.keys import prefix_from_env
from projections.redis_connect import connect


def build_parser() -> argparse.ArgumentParser:
    """The options of ``metering run projection``."""
    parser = argparse.ArgumentParser(
        prog="metering run projection",
        description="Keep the Redis balances (METERING_REDIS_URL, keys under "
        "METERING_REDIS_PREFIX) current from the credit ledger; offsets are committed only "
        "after Redis has the entries. Run several with one --group to share the partitions. "
        "Data Redis lost is restored from the ledger; after a gap, it waits for the entries.",
    )
    add = parser.add_argument
    add("--group", default="metering-projection", help="consumer group (default: %(default)s)")
    add(
        "--instance-id",
        help="static membership id (Kafka group.instance.id), one per consumer: restarted with "
        "the same id, it takes its partitions back at once, not after the 45 s session timeout",
    )
    add_topic_prefix_argument(parser)
    add("--batch-size", type=int, default=2000, help="records per batch (default: %(default)s)")
    add("--metrics-port", type=int, help="serve Prometheus /metrics on this port (default: off)")
    add("--log-level", default="info", help="debug, info, warning or error (default: info)")
    return parser


def main(argv: list[str]) -> int:
    """``metering run projection [--group G] [--instance-id ID] [--topic-prefix P] ...``."""
    from metering.config import load_settings

    parser = build_parser()
    args = parser.parse_args(argv)
    settings = load_settings()
    service_logging(args.log_level, "projection", settings.kafka_bootstrap)
    client = connect(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)
    worker = ProjectionConsumer(
        bootstrap=settings.kafka_bootstrap,
        topics=TopicNames(args.topic_prefix),
        client=client,
        prefix=prefix_from_env(),
        decode=codec_decoder(),
        group_id=args.group,
        batch_size=args.batch_size,
        instance_id=args.instance_id,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = serve(worker.metrics.render, args.metrics_port) if args.metrics_port else None
    log.info(
        "projection consuming %s into %s (group %s, instance %s)",
        worker.topics.credit_ledger,
        settings.redis_url,
        args.group,
        args.instance_id or "dynamic",
    )
    try:
        worker.run(stop)
    finally:
        worker.close()
        client.close()
        if server is not None:
            server.shutdown()
    return 0
