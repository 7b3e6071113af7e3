"""Corrections to faust-streaming 0.15.3 and to aiokafka 0.14.0 (faust's Kafka client): three
that the processor's exactly-once and liveness depend on, one that saves a second at every
worker start.

Each fix is a narrow patch of one function, applied once by :func:`apply` when the app is
built (never on import); the reasons are in docs/processor.md, "Exactly once: what faust does,
where it falls short" (items 5, 6, 12 and 15). The processor also reads and writes faust internals
elsewhere in ``pipeline/runtime`` (``app.py``, ``consumer.py``, ``stores.py``): all of it was
written against exactly :data:`FAUST_VERSION` and :data:`AIOKAFKA_VERSION`, so :func:`apply`
refuses any other version rather than let an upgrade break exactly-once without an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from aiokafka import client as aiokafka_client
from faust.tables import manager as faust_tables_manager
from faust.tables import recovery as faust_recovery
from faust.transport.drivers import aiokafka as faust_aiokafka

FAUST_VERSION = "0.15.3"
"""The one faust-streaming release the processor's patches and private accesses target (the
dependency is pinned to it in pyproject.toml)."""


AIOKAFKA_VERSION = "0.14.0"
"""The one aiokafka release (faust's Kafka client) the processor patches, pinned likewise."""


class UnsupportedFaustVersion(RuntimeError):
    """The installed faust-streaming or aiokafka is not the release the patches target."""


def require_supported_version(
    installed: str | None = None, *, package: str = "faust-streaming"
) -> None:
    """Raise :class:`UnsupportedFaustVersion` unless ``package`` (faust-streaming or aiokafka)
    is the release pinned for it."""
    pinned = {"faust-streaming": FAUST_VERSION, "aiokafka": AIOKAFKA_VERSION}[package]
    installed = installed or version(package)
    if installed != pinned:
        raise UnsupportedFaustVersion(
            f"{package} {installed} is installed, but the processor's exactly-once patches "
            f"target {pinned} only; install {package}=={pinned} (pip install -e . does)"
        )


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


async def _start_tables_now(self: Any) -> None:
    """``TableManager.on_start`` without its first second of sleep.

    faust waits 1 s before it finalizes the tables, for tables an app defines after its worker
    started; the processor defines both when the app is built. That second was paid at every
    worker start, so at every crash recovery and rebalance-driven restart."""
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


_wait_on_metadata = aiokafka_client.AIOKafkaClient._wait_on_metadata


async def _wait_on_metadata_tracked(self: Any, topic: str) -> Any:
    """``AIOKafkaClient._wait_on_metadata`` that also keeps ``topic`` in the client's topic list.

    An aiokafka client asks for every topic's metadata until it first sends to a topic its
    metadata lacks (a full fetch leaves out a topic it got an error for, as right after a
    broker died); from then on it asks for the topics added that way only. A transactional
    producer that had already written other topics (the changelogs) loses their metadata at
    its next refresh: their batches wait for a leader forever, the transaction's commit waits
    for them, and the partition stops for good (docs/processor.md item 15). Keeping every
    topic a client writes in its list keeps their metadata for as long as the client lives.
    """
    self._topics.add(topic)
    return await _wait_on_metadata(self, topic)


_applied = False


def apply() -> None:
    """Check the faust version, then install the fixes (idempotent)."""
    global _applied
    if _applied:
        return
    require_supported_version()
    require_supported_version(package="aiokafka")
    aiokafka_client.AIOKafkaClient._wait_on_metadata = _wait_on_metadata_tracked  # type: ignore[method-assign]
    faust_recovery.asyncio = _FastRecoveryAsyncio()  # type: ignore[assignment]
    faust_aiokafka.AIOKafkaConsumerThread._highwaters = _committed_highwaters  # type: ignore[method-assign]
    faust_tables_manager.TableManager.on_start = _start_tables_now  # type: ignore[method-assign]
    _applied = True
