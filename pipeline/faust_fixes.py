"""Corrections to faust-streaming 0.15.3 that the processor's exactly-once depends on.

Each fix is a narrow patch of one faust function, applied once by :func:`apply`; the reasons are
in docs/processor.md, "Exactly once: what faust does, where it falls short" (items 5 and 6).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.tables import recovery as faust_recovery
from faust.transport.drivers import aiokafka as faust_aiokafka

RECOVERY_POLL_S = 0.5
"""faust's changelog recovery waits 2 x 5 s when a changelog partition ends in an aborted
transaction (its position reaches the high-water mark but no event ever arrives), which is
exactly the state after every crash. We shorten that poll."""


class _FastRecoveryAsyncio:
    """``asyncio`` as faust.tables.recovery sees it, with a shorter ``wait_for`` timeout."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def wait_for(aw: Any, timeout: float | None = None) -> Any:
        if timeout is not None:
            timeout = min(timeout, RECOVERY_POLL_S)
        return asyncio.wait_for(aw, timeout)


async def _committed_highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
    """End offsets as a ``read_committed`` reader sees them (the last stable offset).

    faust asks aiokafka for ``last_stable_offset`` in exactly-once mode, which is only known
    after a fetch of that partition: for a changelog partition just assigned it is None, faust
    reads that as "empty", and recovery then either skips restoring the partition or crashes
    with a ``ConsistencyError``. A ListOffsets request with the consumer's ``read_committed``
    isolation level returns the same offset without waiting for a fetch.
    """
    offsets: Mapping[Any, int] = await self._ensure_consumer().end_offsets(partitions)
    return offsets


_applied = False


def apply() -> None:
    """Install the fixes (idempotent)."""
    global _applied
    if _applied:
        return
    faust_recovery.asyncio = _FastRecoveryAsyncio()  # type: ignore[assignment]
    faust_aiokafka.AIOKafkaConsumerThread._highwaters = _committed_highwaters  # type: ignore[method-assign]
    _applied = True
