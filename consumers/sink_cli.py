"""``metering run sink``: the ClickHouse sink as a process (``consumers.sink``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from consumers.clickhouse import DEFAULT_DATABASE, connect
from consumers.sink import DEFAULT_MAX_ROWS, EAGER_ROWS, ClickHouseSink
from metering.topics import TopicNames

log = logging.getLogger("metering.sink")


def main(argv: list[str]) -> int:
    from metering.config import load_settings

    parser = argparse.ArgumentParser(prog="metering run sink")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--topic-prefix", default="")
    parser.add_argument("--group", default="metering-clickhouse-sink")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    parser.add_argument("--max-wait-ms", type=int, default=1_000)
    parser.add_argument(
        "--eager-rows", type=int, default=EAGER_ROWS, help="flush this many at once when idle"
    )
    parser.add_argument(
        "--instance-id",
        default=None,
        help="static group membership (Kafka group.instance.id), unique and stable per sink "
        "of the group: restarted after a crash with the same id, the sink takes its partitions "
        "back at once instead of after the session timeout (45 s)",
    )
    parser.add_argument(
        "--insert-threads", type=int, default=2, help="partitions inserted in parallel"
    )
    parser.add_argument("--migrate", action="store_true", help="apply migrations first")
    parser.add_argument(
        "--exit-when-caught-up",
        action="store_true",
        help="stop once every partition is at its end and everything is committed",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
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
    rows = sink.run(exit_when_caught_up=args.exit_when_caught_up)
    log.info("sink stopped: %d rows inserted, %d undecodable skipped", rows, sink.stats.dead)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
