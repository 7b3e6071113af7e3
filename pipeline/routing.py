"""Which partition an account's records belong on, and what to do with one that arrived elsewhere.

Design invariant: one account's usage and commands reach the same processor task, so every
input topic is keyed by ``account_id`` and partitioned alike. The pipeline's partitioner is
murmur2, as Java's clients, faust and the SDK use. A producer with another partitioner
(librdkafka's default is CRC32) puts an account's records on other partitions: mixed with the
SDK's, the account would get two states and two ledgers. So the processor checks each record's
partition against its ``account_id`` and forwards one that is elsewhere to its home partition,
in the same transaction that consumes it, marked with :data:`REROUTED_FROM`. A forwarded record
that still arrives elsewhere (the topics' partition counts differ from the worker's) is
dead-lettered rather than forwarded again.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

REROUTED_FROM = "metering.rerouted-from"
"""Header of a forwarded record: the partition it first arrived on."""

_CACHE_MAX = 100_000


class Router:
    """``home(account_id)``: the account's partition, memoised (accounts repeat)."""

    __slots__ = ("_homes", "partitions")

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._homes: dict[str, int] = {}

    def home(self, account_id: str) -> int:
        home = self._homes.get(account_id)
        if home is None:
            if len(self._homes) >= _CACHE_MAX:
                self._homes.clear()
            home = (murmur2(account_id.encode()) & 0x7FFFFFFF) % self.partitions
            self._homes[account_id] = home
        return home
