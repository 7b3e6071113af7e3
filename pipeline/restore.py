"""After faust restores a partition's tables: complete the restore, check it against the ledger,
and put right every account that disagrees (docs/processor.md, "The ledger is the source of
truth").

The ledger topic is the source of truth; the account table is a cache of it. A partition is
processed only once this module has verified it. The decisions are pure
(``pipeline.restore_check``); this module does the reads and the local writes, and hands what
must also reach the changelogs to the sink, which sends it in the partition's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rocksdict import WriteBatch

from metering.topic_reader import read_to_end
from metering.topics import TopicNames
from pipeline.core import BatchProcessor, PartitionOutput
from pipeline.fast_avro import ledger_entry_head
from pipeline.id_store import remember_again, remembered, write_chunks
from pipeline.metrics import Metrics
from pipeline.ports import StateTable
from pipeline.restore_check import (
    CHARGE_ENTRY_SUFFIXES,
    Repair,
    SeqMismatch,
    ids_lost,
    mismatches,
    repair_from_ledger,
    repair_from_snapshots,
)

log = logging.getLogger("pipeline.restore")

Records = list[tuple[bytes, bytes | None]]
Publish = Callable[[int, PartitionOutput], Awaitable[bool]]


class RestoreMismatchError(RuntimeError):
    """A partition's accounts could not be put in agreement with the ledger."""


class RestoreVerifier:
    """Verifies newly restored partitions of the account and id tables (see module doc)."""

    def __init__(
        self,
        bootstrap: str,
        topics: TopicNames,
        table: StateTable,
        ids_table: StateTable,
        processor: BatchProcessor,
        metrics: Metrics,
        publish: Publish,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.table = table
        self.ids_table = ids_table
        self.processor = processor
        self.metrics = metrics
        self.publish = publish
        """Sends an output in the partition's transaction and commits it; False when the
        partition has no transactional producer (any more)."""

    async def verify(self, partitions: list[int]) -> list[int]:
        """Complete, check and repair ``partitions``; returns them (all verified), or raises
        :class:`RestoreMismatchError` when the ledger itself cannot be folded."""
        started = time.monotonic()
        tables = [(self.table, _write_values), (self.ids_table, write_chunks)]
        reads = [
            asyncio.to_thread(
                read_tails,
                self.bootstrap,
                table.changelog,
                partitions,
                self._tails_start(table, partitions),
            )
            for table, _ in tables
        ]
        ledger_read = asyncio.to_thread(
            read_ledger_heads, self.bootstrap, self.topics.credit_ledger, partitions
        )
        tails, ledger = await asyncio.gather(asyncio.gather(*reads), ledger_read)
        for (table, write), table_tails in zip(tables, tails, strict=True):
            self._complete(table, write, table_tails)
        engine = self.processor.engine
        for partition in partitions:
            heads = ledger.get(partition) or LedgerHeads()
            restored = {
                key.decode(): engine.state_seq(value)
                for key, value in self.table.accounts(partition)
            }
            wrong = mismatches(restored, heads.seqs)
            lost = self._ids_lost(partition, heads, {m.account_id for m in wrong})
            if wrong or lost:
                await self._repair(partition, wrong, lost)
        log.info(
            "restored state of partitions %s agrees with the ledger (%d accounts, %.2f s)",
            partitions,
            sum(len(ledger[p].seqs) for p in partitions if p in ledger),
            time.monotonic() - started,
        )
        return partitions

    def _ids_lost(self, partition: int, heads: LedgerHeads, skip: set[str]) -> list[SeqMismatch]:
        """Accounts whose restored id store misses their last charged event (see
        :func:`~pipeline.restore_check.ids_lost`); ``skip``: accounts rebuilt anyway."""
        decode = self.processor.codecs.ledger.decode
        db = self.ids_table.db(partition)
        charges = {a: decode(v) for a, v in heads.last_charges.items() if a not in skip}
        return ids_lost(charges, heads.seqs, lambda a, event_id: remembered(db, a, event_id))

    async def _repair(
        self, partition: int, wrong: list[SeqMismatch], lost: list[SeqMismatch]
    ) -> None:
        """Rebuild ``wrong`` accounts: from the changelog topic's newest committed record when
        it is the state the ledger expects, else from a snapshot plus the ledger's entries; and
        ``lost`` ones (state right, ids missing) from their whole ledger, ids included."""
        self.metrics.restore_mismatches += 1
        if wrong:
            log.error(
                "partition %d: the restored state of %d accounts disagrees with the ledger (%s); "
                "rebuilding them",
                partition,
                len(wrong),
                "; ".join(str(m) for m in wrong[:10]),
            )
        if lost:
            log.error(
                "partition %d: the restored id store does not remember the last charged event "
                "of %d accounts (%s); rebuilding them from the ledger",
                partition,
                len(lost),
                ", ".join(m.account_id for m in lost[:10]),
            )
        snapshots: dict[str, bytes | None] = {}
        if wrong:
            snapshots = await asyncio.to_thread(
                newest_values,
                self.bootstrap,
                self.table.changelog,
                partition,
                {m.account_id for m in wrong},
            )
        engine = self.processor.engine
        repair, left = repair_from_snapshots(wrong, snapshots, engine.state_seq)
        if left or lost:
            entries = await asyncio.to_thread(
                self._ledger_entries, partition, {m.account_id for m in left + lost}
            )
            try:
                repair_from_ledger(repair, left, snapshots, entries, engine)
                repair_from_ledger(repair, lost, {}, entries, engine)
            except ValueError as exc:
                raise RestoreMismatchError(
                    f"partition {partition}: {exc}; nothing was processed"
                ) from exc
        out = self._write(partition, repair)
        self.processor.clear_cache(partition, list(repair.states))
        if not await self.publish(partition, out):
            log.warning(
                "partition %d was revoked during its repair: the next owner repairs it again",
                partition,
            )
        self.metrics.restore_rebuilt += len(repair.states)
        log.warning(
            "partition %d: %d accounts rebuilt from the changelog, %d from the ledger, "
            "%d removed (state with no ledger entry)",
            partition,
            repair.from_changelog,
            repair.from_ledger,
            repair.removed,
        )

    def _write(self, partition: int, repair: Repair) -> PartitionOutput:
        """Write the repaired states and the ids to remember again locally; return them as the
        changelog records that make them durable."""
        out = PartitionOutput(partition)
        batch = WriteBatch(raw_mode=True)
        for account_id, state in repair.states.items():
            if state is None:
                batch.delete(account_id.encode())
                out.deleted.append(account_id)
            else:
                batch.put(account_id.encode(), state)
                out.states[account_id] = state
        self.table.db(partition).write(batch)
        out.id_chunks = remember_again(self.ids_table.db(partition), partition, repair.remember)
        return out

    def _ledger_entries(self, partition: int, accounts: set[str]) -> dict[str, list[Any]]:
        """The committed ledger entries (records, ``seq`` order) of ``accounts`` in
        ``partition`` (blocking I/O: run in a thread)."""
        decode = self.processor.codecs.ledger.decode
        wanted = {a.encode() for a in accounts}
        entries: dict[str, list[Any]] = {a: [] for a in accounts}
        topic = self.topics.credit_ledger
        for batch in read_to_end(self.bootstrap, topic, [partition]):
            for msg in batch:
                if msg.key() in wanted:
                    record = decode(msg.value())
                    entries[record["account_id"]].append(record)
        return entries

    def _tails_start(self, table: StateTable, partitions: list[int]) -> dict[int, int]:
        """partition -> the offset after the last changelog record the store applied."""
        start = {}
        for partition in partitions:
            done = table.persisted_offset(partition)
            start[partition] = 0 if done is None else done + 1
        return start

    def _complete(self, table: StateTable, write: Any, tails: dict[int, Any]) -> None:
        """Apply the committed changelog records that faust's restore left out, if any.

        Each table store records the offset of the last changelog record it applied. Reading
        each changelog partition from there to its end (read_committed, ended by the broker's
        end-of-partition, not by a consumer position) finds nothing after a complete restore,
        and after a cut-short one (docs/processor.md, item 10) exactly the records it skipped:
        the snapshot is completed from its own tail. Both tables, ids included.
        """
        for partition, (records, last) in tails.items():
            if not records:
                continue
            write(table.db(partition), records)
            table.set_persisted_offset(partition, last)
            self.metrics.restore_repaired += len(records)
            log.warning(
                "the restore of %s[%d] left out %d committed records: applied them",
                table.changelog,
                partition,
                len(records),
            )


def _write_values(db: Any, records: Records) -> None:
    """Changelog records of the account table onto its RocksDB, in one batch."""
    batch = WriteBatch(raw_mode=True)
    for key, value in records:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    db.write(batch)


def read_tails(
    bootstrap: str, topic: str, partitions: list[int], start: dict[int, int]
) -> dict[int, tuple[Records, int]]:
    """partition -> (committed records from ``start`` to the end, the last one's offset)."""
    tails: dict[int, tuple[Records, int]] = {p: ([], -1) for p in partitions}
    for batch in read_to_end(bootstrap, topic, partitions, start=start):
        for msg in batch:
            records, _ = tails[msg.partition()]
            records.append((msg.key(), msg.value()))
            tails[msg.partition()] = (records, msg.offset())
    return tails


def newest_values(
    bootstrap: str, topic: str, partition: int, accounts: Iterable[str]
) -> dict[str, bytes | None]:
    """account -> the value of its newest committed record in a changelog partition (None: a
    tombstone, or no record at all)."""
    wanted = {a.encode(): a for a in accounts}
    newest: dict[str, bytes | None] = dict.fromkeys(wanted.values())
    for batch in read_to_end(bootstrap, topic, [partition]):
        for msg in batch:
            account = wanted.get(msg.key())
            if account is not None:
                newest[account] = msg.value()
    return newest


@dataclass
class LedgerHeads:
    """What the restore check takes from a ledger partition, read in offset order."""

    seqs: dict[str, int] = field(default_factory=dict)
    """account -> the last ``seq`` the committed ledger holds"""
    last_charges: dict[str, bytes] = field(default_factory=dict)
    """account -> its last entry that charged (or turned away) a usage event, still framed"""


def read_ledger_heads(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, LedgerHeads]:
    """partition -> :class:`LedgerHeads` of the committed ledger (blocking I/O)."""
    heads = {p: LedgerHeads() for p in partitions}
    for batch in read_to_end(bootstrap, topic, partitions):
        for msg in batch:
            value = msg.value()
            entry_id, account_id, seq = ledger_entry_head(value)
            part = heads[msg.partition()]
            part.seqs[account_id] = seq
            if entry_id.endswith(CHARGE_ENTRY_SUFFIXES):
                part.last_charges[account_id] = value
    return heads
