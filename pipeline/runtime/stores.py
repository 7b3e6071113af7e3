"""The account table's RocksDB store: a partition we are (re)assigned is rebuilt from its changelog.

faust keeps a partition's RocksDB when the partition moves away and reuses it, with its
persisted changelog offset, when the partition comes back. For us that local copy is not
trustworthy: it may hold writes of a transaction that was aborted (the processor writes RocksDB
before the transaction commits) for accounts the next owner never touched, and its persisted
offset may be ahead of what a ``read_committed`` reader sees, which crashes faust's recovery with
a ``ConsistencyError``. So every newly assigned active partition starts empty and faust restores
it from the committed changelog, the only truth. Partitions kept across a rebalance keep their
DB: the revocation handler commits their open transaction before the rebalance goes on.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from faust.stores import STORES
from faust.stores.rocksdb import Store

from pipeline.id_store import write_chunks

SCHEME = "metering-rocksdb"
"""The account table's store URL scheme (``metering-rocksdb://``)."""
IDS_SCHEME = "metering-ids-rocksdb"
"""The event-id table's store URL scheme: its changelog carries chunks (``id_store``)."""


class ChangelogRebuiltStore(Store):  # type: ignore[misc]  # faust is untyped
    """A rocksdict store that drops a partition's local DB whenever it is newly assigned."""

    async def assign_partitions(self, table: Any, tps: Any, generation_id: int = 0) -> None:
        standbys = self.app.assignor.assigned_standbys()
        changelogs = table.changelog_topic.topics
        for tp in tps:
            if tp.topic in changelogs and tp not in standbys:
                self.drop_partition(tp.partition)
        await super().assign_partitions(table, tps, generation_id)

    def drop_partition(self, partition: int) -> None:
        """Close and delete ``partition``'s local DB, so it is restored from offset 0."""
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        shutil.rmtree(self.partition_path(partition), ignore_errors=True)
        self.log.info(
            "dropped local db of partition %d: it is restored from the changelog", partition
        )


class EventIdStore(ChangelogRebuiltStore):
    """The ``event_ids`` table's store: a restored chunk becomes its ids' lookup keys too."""

    def apply_changelog_batch(
        self, batch: Iterable[Any], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]
    ) -> None:
        records: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        offsets: dict[Any, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, msg.offset))
            records[msg.partition].append((msg.key, msg.value))
        for partition, chunks in records.items():
            write_chunks(self._db_for_partition(partition), chunks)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)


def register() -> None:
    """Make faust resolve :data:`SCHEME` and :data:`IDS_SCHEME` store URLs to these stores
    (called when the app is built, not on import)."""
    STORES.aliases[SCHEME] = f"{__name__}:ChangelogRebuiltStore"
    STORES.aliases[IDS_SCHEME] = f"{__name__}:EventIdStore"
