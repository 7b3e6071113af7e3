"""``metering run sink`` that dies (``os._exit``) right after its first inserts, before it
commits: test-only, never shipped. ``python crashing_sink.py SINK ARGS``."""

from __future__ import annotations

import os
import sys
from typing import Any

from consumers import sink, sink_cli

CRASH_EXIT_CODE = 77


def main(argv: list[str]) -> int:
    insert = sink.ClickHouseSink._insert_batches

    def insert_then_die(self: Any, *args: Any) -> None:
        insert(self, *args)
        os._exit(CRASH_EXIT_CODE)

    sink.ClickHouseSink._insert_batches = insert_then_die  # type: ignore[method-assign]
    return sink_cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
