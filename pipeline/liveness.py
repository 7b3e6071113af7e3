"""The processor's liveness stop: a batch or a commit that hangs stops the worker.

A worker whose batch or commit waits on a Kafka client that will not recover (docs/processor.md
items 13 and 15) looks alive, holds its partitions and commits nothing, for good and without an
error. :class:`Liveness` keeps the start of every batch and commit under way; a timer asks
:meth:`Liveness.check`, which stops the worker once one has run longer than
:data:`STUCK_AFTER_S`, logging where the waiting tasks wait. The group then hands the
partitions on, and they are restored from the committed state. Runtime-agnostic: the stop is
the ``crash`` callable it is given.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("pipeline.liveness")

STUCK_AFTER_S = 60.0
"""How long processing one fetched batch, or one commit (waiting for its locks included), may
run before the worker stops. A batch takes milliseconds and a commit well under a second; 60 s
is the producers' ``transaction.timeout.ms`` (aiokafka's default), after which the coordinator
aborts the open transaction anyway: anything still waiting then waits on a client that will
not recover."""


class StuckError(RuntimeError):
    """A batch or a commit ran longer than :data:`STUCK_AFTER_S`."""


class Liveness:
    """What is under way since when, and the stop when something has run too long."""

    def __init__(
        self,
        crash: Callable[[BaseException], Awaitable[None]],
        stuck_after_s: float = STUCK_AFTER_S,
    ) -> None:
        self.crash = crash
        self.stuck_after_s = stuck_after_s
        self._running: dict[object, tuple[str, float]] = {}
        """token -> (what, monotonic start)"""
        self._stopped = False

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        """Mark ``what`` as under way for :meth:`check`."""
        token = object()
        self._running[token] = (what, time.monotonic())
        try:
            yield
        finally:
            del self._running[token]

    async def check(self) -> None:
        """Stop the worker (once) when anything under way has run longer than
        ``stuck_after_s``."""
        if self._stopped:
            return
        now = time.monotonic()
        for what, since in list(self._running.values()):
            if now - since > self.stuck_after_s:
                self._stopped = True
                error = StuckError(f"{what} has run for {now - since:.0f} s")
                log.error(
                    "%s: stopping the worker; its partitions go to the group. Waiting:\n%s",
                    error,
                    waiting_tasks(),
                )
                await self.crash(error)
                return


def waiting_tasks(limit: int = 20) -> str:
    """Where the tasks of this loop that wait in the sink or in a Kafka producer are waiting
    (each task's chain of awaits, innermost last), for the log of a hung batch or commit."""
    out = io.StringIO()
    shown = 0
    for task in asyncio.all_tasks():
        chain: list[FrameType] = []
        coro: Any = task.get_coro()
        while coro is not None and len(chain) < 40:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                chain.append(frame)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        files = [frame.f_code.co_filename for frame in chain]
        if not any(f.endswith("pipeline/sink.py") or "aiokafka/producer" in f for f in files):
            continue
        out.write(f"{task.get_name()}:\n")
        for frame in chain:
            flags = {
                k: v for k, v in frame.f_locals.items() if isinstance(v, bool | int) and k != "self"
            }
            code = frame.f_code
            out.write(f"  {code.co_filename}:{frame.f_lineno} {code.co_name} {flags or ''}\n")
        shown += 1
        if shown >= limit:
            break
    return out.getvalue()
