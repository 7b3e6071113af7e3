"""The ``metering`` console command: a thin dispatcher to each component's own CLI.

Each command lives next to the code it drives and exposes ``main(argv) -> int``;
this module only routes, so importing it stays cheap and a broken optional
component cannot take the others down.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from metering.config import ConfigError, StateInUse


class Command(NamedTuple):
    """One ``metering`` command: where it lives and what ``metering --help`` says about it."""

    target: str  # "module:function"; the function takes the remaining argv
    summary: str  # one line, user-facing
    group: str  # heading it is listed under in ``metering --help``


SETUP = "set up"
RUN = "services (one process each)"
OPERATE = "operate"
TRY = "try it"
BENCH = "benchmarks (each beside a baseline; the last line is JSON)"

# (command words) -> Command, listed in this order, grouped by heading.
COMMANDS: dict[tuple[str, ...], Command] = {
    ("stack",): Command("devstack.cli:main", "start, check or stop a local Kafka and Redis", SETUP),
    ("env",): Command(
        "cli.env:main", 'METERING_* exports for this stack: eval "$(metering env)"', SETUP
    ),
    ("topics",): Command("metering.topics:main", "create the pipeline's Kafka topics", SETUP),
    ("clickhouse",): Command(
        "consumers.migrations:main", "apply or list the ClickHouse schema migrations", SETUP
    ),
    ("run", "processor"): Command(
        "pipeline.worker:main", "price usage into the credit ledger (a faust worker)", RUN
    ),
    ("run", "projection"): Command(
        "projections.projection_cli:main", "keep the Redis balances current from the ledger", RUN
    ),
    ("run", "sidecar"): Command(
        "projections.sidecar_cli:main", "the enforcement HTTP API (check, reserve, ...)", RUN
    ),
    ("run", "sink"): Command(
        "consumers.sink_cli:main", "copy usage and the ledger into ClickHouse", RUN
    ),
    ("run", "web"): Command(
        "accountpage.server:main", "the account page plus the sidecar API", RUN
    ),
    ("projection",): Command(
        "projections.cli:main", "rebuild or verify the Redis balances from the ledger", OPERATE
    ),
    ("usage",): Command(
        "consumers.queries_cli:main", "credit usage reports from ClickHouse", OPERATE
    ),
    ("reconcile",): Command(
        "consumers.reconcile:main", "check that the ledger, ClickHouse and Redis agree", OPERATE
    ),
    ("backfill",): Command(
        "metering.backfill.cli:main",
        "load historical usage from a file (JSON Lines or Avro)",
        OPERATE,
    ),
    ("demo",): Command("demo:main", "the whole pipeline on this machine, playing a story", TRY),
    ("bench", "produce"): Command(
        "benchmarks.produce:main", "SDK produce throughput vs raw confluent-kafka", BENCH
    ),
    ("bench", "backfill"): Command(
        "benchmarks.backfill:main", "metering backfill throughput vs raw confluent-kafka", BENCH
    ),
    ("bench", "engine"): Command(
        "benchmarks.engine:main", "credit engine throughput in one process", BENCH
    ),
    ("bench", "processor"): Command(
        "benchmarks.processor:main", "processor throughput and latency, exactly-once", BENCH
    ),
    ("bench", "enforce"): Command(
        "benchmarks.enforce:main", "enforcement and sidecar latency, apply throughput", BENCH
    ),
    ("bench", "clickhouse"): Command(
        "benchmarks.sink:main", "sink throughput and usage query time in ClickHouse", BENCH
    ),
    ("bench", "capacity"): Command(
        "benchmarks.capacity:main",
        "sizes per account, hold, entry and event (docs/scale.md)",
        BENCH,
    ),
}


def _usage() -> str:
    width = max(len(" ".join(words)) for words in COMMANDS) + 2
    lines = [
        "usage: metering <command> [options]",
        "",
        "AI-credit metering: usage events on Kafka, priced into a credit ledger,",
        "enforced from Redis, reported from ClickHouse.",
    ]
    group = None
    for words, command in COMMANDS.items():
        if command.group != group:
            group = command.group
            lines += ["", f"{group}:"]
        lines.append(f"  {' '.join(words):<{width}}{command.summary}")
    lines += ["", "Run 'metering <command> --help' for the options of a command."]
    return "\n".join(lines)


def resolve(argv: Sequence[str]) -> tuple[Callable[[list[str]], int], list[str]] | None:
    """Find the longest command prefix of ``argv`` and load its entry point."""
    for length in (2, 1):
        command = COMMANDS.get(tuple(argv[:length]))
        if command is None:
            continue
        module_name, _, func_name = command.target.partition(":")
        module = importlib.import_module(module_name)
        func: Callable[[list[str]], int] = getattr(module, func_name)
        return func, list(argv[length:])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    try:
        found = resolve(args)
    except ModuleNotFoundError as exc:
        command = " ".join(args[:2])
        print(f"metering: {command} is not available in this build ({exc})", file=sys.stderr)
        return 2
    if found is None:
        print(f"metering: unknown command {' '.join(args[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    func, rest = found
    try:
        return func(rest)
    except ConfigError as exc:
        print(f"metering: configuration error: {exc}", file=sys.stderr)
        return 2
    except StateInUse as exc:  # e.g. a command that writes embedded ClickHouse
        print(
            f"metering: {exc}: stop it first, or use a ClickHouse server "
            "(METERING_CLICKHOUSE_URL=http://...)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
