"""The processor worker with faults injected into its consumer: test-only, never shipped.

``python faulty_worker.py [--fault-delivery-delay S] [--fault-fetch-position] WORKER ARGS``

* ``--fault-delivery-delay S`` pauses S seconds between each fetch and its delivery: the window
  in which faust's recovery used to lose a partition's state (docs/processor.md, item 10).
* ``--fault-fetch-position`` answers consumer positions as aiokafka gives them (the bug the
  batching consumer fixes), to test the restore check's completion alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pipeline import worker
from pipeline.runtime import app as runtime_app


def _faulty(delay_s: float, aiokafka_position: bool) -> Any:
    make = runtime_app.batch_consumer_class

    def batch_consumer_class(source_topics: frozenset[str], handler: Any) -> type[Any]:
        base = make(source_topics, handler)
        grandparent = base.__mro__[1]  # faust's aiokafka Consumer

        class FaultyConsumer(base):  # type: ignore[misc, valid-type]
            async def position(self, tp: Any) -> int | None:
                if aiokafka_position:
                    pos: int | None = await grandparent.position(self, tp)
                    return pos
                return await super().position(tp)  # type: ignore[no-any-return]

            async def _deliver(self, records: Any, active: Any) -> None:
                if delay_s:
                    await asyncio.sleep(delay_s)
                await super()._deliver(records, active)

        return FaultyConsumer

    return batch_consumer_class


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--fault-delivery-delay", type=float, default=0.0)
    p.add_argument("--fault-fetch-position", action="store_true")
    faults, rest = p.parse_known_args(argv)
    runtime_app.batch_consumer_class = _faulty(  # type: ignore[assignment]
        faults.fault_delivery_delay, faults.fault_fetch_position
    )
    return worker.main(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
