"""The ``metering`` console command: a thin dispatcher to each component's own CLI.

Each command lives next to the code it drives and exposes ``main(argv) -> int``;
this module only routes, so importing it stays cheap and a broken optional
component cannot take the others down.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from metering.config import ConfigError

# (command words) -> "module:function"; the function takes the remaining argv.
COMMANDS: dict[tuple[str, ...], str] = {
    ("stack",): "devstack.cli:main",
    ("topics",): "metering.topics:main",
    ("bench", "produce"): "benchmarks.produce:main",
    ("bench", "engine"): "benchmarks.engine:main",
    ("bench", "processor"): "benchmarks.processor:main",
    ("bench", "enforce"): "benchmarks.enforce:main",
    ("bench", "clickhouse"): "benchmarks.sink:main",
    ("run", "processor"): "pipeline.worker:main",
    ("run", "projection"): "projections.consumer:main",
    ("run", "sidecar"): "projections.sidecar_cli:main",
    ("run", "sink"): "consumers.sink_cli:main",
    ("run", "web"): "accountpage.server:main",
    ("projection",): "projections.cli:main",
    ("clickhouse",): "consumers.migrations:main",
    ("usage",): "consumers.queries_cli:main",
    ("reconcile",): "consumers.reconcile:main",
    ("demo",): "demo:main",
}


def _usage() -> str:
    lines = ["usage: metering <command> [args]", "", "commands:"]
    lines += [f"  {' '.join(words)}" for words in COMMANDS]
    return "\n".join(lines)


def resolve(argv: Sequence[str]) -> tuple[Callable[[list[str]], int], list[str]] | None:
    """Find the longest command prefix of ``argv`` and load its entry point."""
    for length in (2, 1):
        target = COMMANDS.get(tuple(argv[:length]))
        if target is None:
            continue
        module_name, _, func_name = target.partition(":")
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


if __name__ == "__main__":
    raise SystemExit(main())
