"""``metering run sink``: the ClickHouse sink as a process (``consumers.sink``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from consumers.clickhouse import add_database_argument, connect
from consumers.sink import DEFAULT_MAX_ROWS, EAGER_ROWS, ClickHouseSink
from metering.logs import service_logging
from metering.metrics import exposition, serve
from metering.topics import TopicNames, add_topic_prefix_argument

log = logging.getLogger("metering.sink")


def main(argv: list[str]) -> int:
    from metering.config import load_settings

    parser = argparse.ArgumentParser(
        prog="metering run sink",
        description="Copy the usage-events and credit-ledger topics into ClickHouse "
        "(METERING_CLICKHOUSE_URL), exactly once, in batches. Run several with the same "
        "--group to share the partitions.",
    )
    add_database_argument(parser)
    add_topic_prefix_argument(parser)
    parser.add_argument(
        "--group",
        default="metering-clickhouse-sink",
        metavar="ID",
        help="Kafka consumer group (default: metering-clickhouse-sink)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        metavar="N",
        help=f"insert once this many rows wait (default: {DEFAULT_MAX_ROWS})",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=int,
        default=1_000,
        metavar="MS",
        help="insert at the latest this long after the oldest waiting row (default: 1000)",
    )
    parser.add_argument(
        "--eager-rows",
        type=int,
        default=EAGER_ROWS,
        metavar="N",
        help=f"with no insert running, insert as soon as this many rows wait "
        f"(default: {EAGER_ROWS})",
    )
    parser.add_argument(
        "--instance-id",
        default=None,
        metavar="ID",
        help="static group membership id (Kafka group.instance.id), one per sink: restarted "
        "with the same id, a sink takes its partitions back at once instead of after the "
        "session timeout of 45 s (default: none)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (default: off)",
    )
    parser.add_argument(
        "--insert-threads",
        type=int,
        default=2,
        metavar="N",
        help="partitions inserted in parallel (default: 2)",
    )
    parser.add_argument(
        "--migrate", action="store_true", help="apply the ClickHouse migrations first"
    )
    parser.add_argument(
        "--exit-when-caught-up",
        action="store_true",
        help="stop once every partition is at its end and everything is committed",
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        default="info",
        help="debug, info, warning or error (default: info)",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    service_logging(args.log_level, "sink", settings.kafka_bootstrap)
    if args.migrate:
        from consumers.migrations import migrate

        migrate(settings.clickhouse_url, args.database)
    sink = ClickHouseSink(
        bootstrap=settings.kafka_bootstrap,
        client=connect(settings.clickhouse_url, args.database),
        insert_clients=[
            connect(settings.clickhouse_url, args.database, slot=i)
            for i in range(1, max(1, args.insert_threads))
        ],
        topics=TopicNames(args.topic_prefix),
        group=args.group,
        max_rows=args.max_rows,
        max_wait_s=args.max_wait_ms / 1000,
        eager_rows=args.eager_rows,
        instance_id=args.instance_id,
    )
    signal.signal(signal.SIGTERM, lambda *_: sink.stop())
    signal.signal(signal.SIGINT, lambda *_: sink.stop())
    server = None
    if args.metrics_port:
        server = serve(lambda: exposition(sink.stats.families), args.metrics_port)
    try:
        rows = sink.run(exit_when_caught_up=args.exit_when_caught_up)
    finally:
        if server is not None:
            server.shutdown()
    log.info("sink stopped: %d rows inserted, %d undecodable skipped", rows, sink.stats.dead)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
