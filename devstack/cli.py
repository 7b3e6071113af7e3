"""``metering stack up|status|down|jars``: the local stack from the command line."""

from __future__ import annotations

import argparse
import sys

from devstack.kafka import KafkaError, ensure_jars, jars_present, libs_dir
from devstack.local import LocalStack, StackError
from devstack.redis import RedisError
from metering.config import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metering stack",
        description="Run a local Kafka (KRaft) and Redis for development, on free ports, with "
        "their data under the state dir (METERING_STATE_DIR, default .metering). The other "
        "commands find them without any METERING_* address set.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser(
        "up",
        help="start Kafka (KRaft) and Redis; returns once they answer",
        description="Start Kafka (KRaft) and Redis unless they run already, wait until both "
        "answer, then print their addresses.",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for both to answer (default: 120)",
    )
    up.add_argument(
        "--kafka-brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="1 broker, or a 3-node KRaft cluster (replication factor 3, min ISR 2) (a new "
        "stack only; default: 1)",
    )
    up.add_argument(
        "--redis-cluster",
        action="store_true",
        help="a Redis Cluster of 3 masters and 3 replicas instead of one Redis (a new stack "
        "only; the URL is redis+cluster://...)",
    )
    sub.add_parser(
        "status",
        help="each component, up or down, with its address",
        description="Print each component, up or down, with its address. Exit status 3 when "
        "the stack is not up.",
    )
    down = sub.add_parser(
        "down",
        help="stop the processes `up` started",
        description="Stop the Kafka and Redis processes that `metering stack up` started.",
    )
    down.add_argument("--purge", action="store_true", help="also delete Kafka and Redis data")
    down.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for each process to stop (default: 30)",
    )
    sub.add_parser(
        "jars",
        help="resolve the Kafka jars with Maven (skipped when cached)",
        description="Download the Kafka broker's jars with Maven into METERING_KAFKA_LIBS "
        "(default: under ~/.cache/metering). Nothing happens when they are already there.",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "jars":
        libs = libs_dir()
        if jars_present(libs):
            print(f"kafka jars: already in {libs}")
            return 0
        try:
            ensure_jars(libs)
        except KafkaError as exc:
            print(f"metering stack jars: {exc}", file=sys.stderr)
            return 1
        print(f"kafka jars: resolved into {libs}")
        return 0

    settings = load_settings()
    stack = LocalStack(settings.state_dir)
    if args.action == "up":
        try:
            started = stack.up(
                timeout=args.timeout,
                remember=True,
                redis_cluster=args.redis_cluster,
                kafka_brokers=args.kafka_brokers,
            )
        except (StackError, KafkaError, RedisError) as exc:
            print(f"metering stack up: {exc}", file=sys.stderr)
            return 1
        print("stack: started" if started else "stack: already running")
        _print_status(stack)
        return 0
    if args.action == "status":
        _print_status(stack)
        return 0 if stack.is_up() else 3
    stopped = stack.down(timeout=args.timeout, purge=args.purge)
    print(f"stack: stopped {', '.join(stopped)}" if stopped else "stack: nothing was running")
    return 0


def _print_status(stack: LocalStack) -> None:
    print(f"state dir: {stack.state_dir}")
    for line in stack.status():
        state = line.state or ("up" if line.up else "down")
        pid = f" (pid {line.pid})" if line.pid and line.up else ""
        detail = f"  [{line.detail}]" if line.detail else ""
        print(f"  {line.name:<11} {state:<8} {line.address}{pid}{detail}")
