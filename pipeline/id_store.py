"""The processor's memory of usage event ids (and correction command ids): per partition,
outside the account states.

Design invariant 2: an event id is charged exactly once while it is inside the idempotency
window (35 days of account event time by default), however busy its account. Keeping the ids in
the account's state made that state grow with traffic and be rewritten on every batch, and a cap
on its size made the window shrink for the busiest accounts. Here each partition has its own
RocksDB of ids (the faust table ``event_ids``), written in the same Kafka transaction as the
ledger through that table's changelog.

Layout (``P`` = 2-byte length + account id, ``h`` = 12-byte BLAKE2b of the event id):

* ``P + b"i" + h`` -> ``b""``: the lookup key, one per remembered id (local only);
* ``P + b"c" + newest + h0 [+ b"\x02"]`` -> the ids one batch remembered for the account: a
  *chunk* (``newest`` = their latest remembered-at time, 8 bytes, order-preserving; ``h0`` = the
  first id's hash, which makes the key unique). Chunks are what the changelog carries: one
  record per account and batch, not one per event. A chunk written before charges were kept
  is ``h h h ...``; one whose key ends in ``\x02`` is ``(h, 2-byte length, charge) ...``,
  where the charge (``metering.domain.charges``) is what the event was charged, empty when it
  was not. The lookup key's value is that charge, so ``void_usage`` can give it back.
* ``P + b"k" + at + h0 + b"\x02"`` -> a *kept* chunk: ids that never leave (correction markers,
  below), laid out as a chunk with empty charges; never expired, never tombstoned.

A voided event is remembered as one more id, its *void marker*: the event id hashed with
another personalization, so no event id can collide with it. A correction command
(``void_usage``, ``amend_usage``) is remembered the same way, its *correction marker* (the
command id, personalized ``cmd``), but in a kept chunk: a command id applies at most once for
as long as the ledger is kept (design invariant 2), and account states, which hold the other
commands' ids, do not grow with corrections (~15 bytes per correction here instead). An
amended event's new charge is one more id too, a *version* (``correction_key(event_id, n)``,
n = 1, 2, ...): the event's charge is that of its last version, else its own. Each key is
written once, so a chunk's expiry deletes exactly the keys it wrote.

Expiry: when an account's window horizon passes a chunk's ``newest``, the chunk and its ids are
deleted and the chunk's key is tombstoned in the changelog. Chunks sort by ``newest`` within an
account, so each is visited once. :func:`write_chunks` is the one way the live path, faust's
restore and the restore's completion turn changelog records into local keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from hashlib import blake2b
from typing import Any

from rocksdict import WriteBatch

from metering.domain.charges import (
    ChargeParts,
    ChargeRecord,
    decode_charge,
    encode_charge,
    pack_charge,
)
from pipeline.ports import ToRemember

HASH_BYTES = 12
"""96 bits: a false duplicate inside one account's window needs a 96-bit collision."""
_OFFSET = 1 << 63
_NEVER = -(2**63)
EXPIRE_STEP_MS = 3_600_000
"""A view passes its horizon to the store at most once per hour of account time: forgetting a
little later than allowed is always safe, and the engine asks on every event."""

ChunkRecord = tuple[bytes, bytes | None]
"""(chunk key, packed hashes) to write, or (chunk key, None) to delete: a changelog record."""


def account_prefix(account_id: str) -> bytes:
    raw = account_id.encode()
    return len(raw).to_bytes(2, "big") + raw


def id_hash(event_id: str) -> bytes:
    return blake2b(event_id.encode(), digest_size=HASH_BYTES).digest()


def remembered(db: Any, account_id: str, event_id: str) -> bool:
    """Does the store ``db`` (one partition's) remember ``event_id`` for ``account_id``?"""
    return db.get(account_prefix(account_id) + b"i" + id_hash(event_id)) is not None


def void_marker(event_id: str) -> bytes:
    """The id that says ``event_id`` was voided (a hash no event id can have)."""
    return blake2b(event_id.encode(), digest_size=HASH_BYTES, person=b"void").digest()


def correction_marker(command_id: str) -> bytes:
    """The id that says the correction command ``command_id`` was applied (or refused)."""
    return blake2b(command_id.encode(), digest_size=HASH_BYTES, person=b"cmd").digest()


def correction_key(event_id: str, version: int) -> bytes:
    """The id under which ``amend_usage`` number ``version`` keeps the event's new charge."""
    return blake2b(event_id.encode(), digest_size=HASH_BYTES, person=b"fix%d" % version).digest()


_WITH_CHARGES = b"\x02"


def chunk_key(prefix: bytes, newest: int, first: bytes) -> bytes:
    return prefix + b"c" + (newest + _OFFSET).to_bytes(8, "big") + first + _WITH_CHARGES


def kept_chunk_key(prefix: bytes, at: int, first: bytes) -> bytes:
    """A chunk of ids that never expire: outside the ``c`` range that expiry walks."""
    return prefix + b"k" + (at + _OFFSET).to_bytes(8, "big") + first + _WITH_CHARGES


def chunk_entries(key: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    """(hash, charge) of every id in a chunk (the charge empty when none, or an old chunk)."""
    if not key.endswith(_WITH_CHARGES) or len(key) != len(_prefix_of(key)) + 22:
        return [(value[i : i + HASH_BYTES], b"") for i in range(0, len(value), HASH_BYTES)]
    out: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(value):
        h = value[i : i + HASH_BYTES]
        size = int.from_bytes(value[i + HASH_BYTES : i + HASH_BYTES + 2], "big")
        start = i + HASH_BYTES + 2
        out.append((h, value[start : start + size]))
        i = start + size
    return out


def pack_chunk(entries: dict[bytes, bytes | None]) -> bytes:
    parts: list[bytes] = []
    for h, charge in entries.items():
        data = charge or b""
        parts += (h, len(data).to_bytes(2, "big"), data)
    return b"".join(parts)


def chunk_newest(key: bytes, prefix_len: int) -> int:
    start = prefix_len + 1
    return int.from_bytes(key[start : start + 8], "big") - _OFFSET


def _prefix_of(key: bytes) -> bytes:
    return key[: 2 + int.from_bytes(key[:2], "big")]


def write_chunks(db: Any, records: Iterable[ChunkRecord]) -> None:
    """Write ``records`` (chunks and chunk tombstones) to ``db`` in one RocksDB batch: a chunk
    and the lookup key of every id in it, or the removal of both."""
    batch = WriteBatch(raw_mode=True)
    written: dict[bytes, bytes] = {}  # chunks put by this call: the batch is not readable
    for key, value in records:
        prefix = _prefix_of(key)
        ids = prefix + b"i"
        if value is None:
            value = written.pop(key, None) or db.get(key)
            batch.delete(key)
            if value is None:
                continue
            for h, _ in chunk_entries(key, value):
                batch.delete(ids + h)
        else:
            written[key] = value
            batch.put(key, value)
            for h, charge in chunk_entries(key, value):
                batch.put(ids + h, charge)
    db.write(batch)


class IdStore:
    """Ids of the partitions this worker owns: RocksDB plus the current batch's new ids."""

    def __init__(self, db_for_partition: Callable[[int], Any]) -> None:
        self._db_for = db_for_partition
        self._new: dict[int, dict[bytes, dict[bytes, bytes | None]]] = {}
        """partition -> account prefix -> hash -> charge, of the ids remembered in the current
        batch (in order; a busy account's lookups stay O(1) within its batch)"""
        self._newest: dict[int, dict[bytes, int]] = {}
        self._horizon: dict[int, dict[bytes, int]] = {}
        self._oldest: dict[tuple[int, bytes], int] = {}
        """(partition, prefix) -> the oldest chunk's ``newest`` still stored (purge skips)"""
        self._kept: dict[int, dict[bytes, dict[bytes, int]]] = {}
        """partition -> account prefix -> hash -> at, of the ids kept in the current batch"""

    def view(self, partition: int, account_id: str) -> StoreIds:
        return StoreIds(self, partition, account_prefix(account_id))

    def clear(self) -> None:
        """Forget the current batch and cached bounds (a rebalance, or a batch given up)."""
        self._new.clear()
        self._newest.clear()
        self._horizon.clear()
        self._oldest.clear()
        self._kept.clear()

    def contains(self, partition: int, prefix: bytes, h: bytes) -> bool:
        new = self._new.get(partition)
        if new is not None:
            pending = new.get(prefix)
            if pending is not None and h in pending:
                return True
        if self._kept:
            kept = self._kept.get(partition, {}).get(prefix)
            if kept is not None and h in kept:
                return True
        return self._db_for(partition).get(prefix + b"i" + h) is not None

    def charge(self, partition: int, prefix: bytes, h: bytes) -> bytes | None:
        """The charge remembered with an id (empty or None: none)."""
        new = self._new.get(partition)
        if new is not None:
            pending = new.get(prefix)
            if pending is not None and h in pending:
                return pending[h]
        value: bytes | None = self._db_for(partition).get(prefix + b"i" + h)
        return value

    def current_charge(self, partition: int, prefix: bytes, event_id: str) -> tuple[bytes, int]:
        """The event's charge as last corrected (empty: none) and the number of its versions."""
        data = self.charge(partition, prefix, id_hash(event_id)) or b""
        versions = 0
        while data:
            newer = self.charge(partition, prefix, correction_key(event_id, versions + 1))
            if not newer:
                break
            data = newer
            versions += 1
        return data, versions

    def set_charge(
        self,
        partition: int,
        prefix: bytes,
        event_id: str,
        at: int,
        charge: bytes,
        current: tuple[bytes, int] | None = None,
    ) -> None:
        """Make ``charge`` the event's charge from now on: kept with its id while the id holds
        none (remembered in this batch), else as a new version, unless it is the one held.
        ``current``: what :meth:`current_charge` just answered, when the caller has it."""
        held, versions = current or self.current_charge(partition, prefix, event_id)
        if held == charge:
            return
        if not held:
            self.attach(partition, prefix, id_hash(event_id), charge)
        else:
            self.add(partition, prefix, correction_key(event_id, versions + 1), at, charge)

    def add(
        self, partition: int, prefix: bytes, h: bytes, at: int, charge: bytes | None = None
    ) -> None:
        self._new.setdefault(partition, {}).setdefault(prefix, {})[h] = charge
        newest = self._newest.setdefault(partition, {})
        if newest.get(prefix, _NEVER) < at:
            newest[prefix] = at

    def keep(self, partition: int, prefix: bytes, h: bytes, at: int) -> None:
        """Remember ``h`` for good (a kept chunk: no window lets it go)."""
        self._kept.setdefault(partition, {}).setdefault(prefix, {})[h] = at

    def attach(self, partition: int, prefix: bytes, h: bytes, charge: bytes) -> None:
        """Keep ``charge`` with an id remembered in the current batch."""
        pending = self._new.get(partition, {}).get(prefix)
        if pending is not None and h in pending:
            pending[h] = charge

    def expire(self, partition: int, prefix: bytes, horizon: int) -> None:
        horizons = self._horizon.setdefault(partition, {})
        if horizons.get(prefix, _NEVER) < horizon:
            horizons[prefix] = horizon

    def flush(self, partition: int) -> list[ChunkRecord]:
        """The changelog records of the batch just processed in ``partition``: a chunk per
        account that remembered ids (and one that kept ids), and a tombstone per chunk that
        left its window."""
        records: list[ChunkRecord] = []
        horizons = self._horizon.pop(partition, None)
        if horizons:
            db = self._db_for(partition)
            for prefix, horizon in horizons.items():
                records.extend(self._expired(db, partition, prefix, horizon))
        new = self._new.pop(partition, None)
        newest = self._newest.pop(partition, {})
        if new:
            for prefix, hashes in new.items():
                at = newest[prefix]
                first = next(iter(hashes))
                records.append((chunk_key(prefix, at, first), pack_chunk(hashes)))
                slot = (partition, prefix)
                if at < self._oldest.get(slot, at + 1):
                    self._oldest[slot] = at
        kept = self._kept.pop(partition, None)
        if kept:
            for prefix, times in kept.items():
                first = next(iter(times))
                chunk = dict.fromkeys(times, None)
                records.append(
                    (kept_chunk_key(prefix, max(times.values()), first), pack_chunk(chunk))
                )
        return records

    def _expired(self, db: Any, partition: int, prefix: bytes, horizon: int) -> list[ChunkRecord]:
        slot = (partition, prefix)
        oldest = self._oldest.get(slot)
        if oldest is not None and oldest >= horizon:
            return []
        start = prefix + b"c"
        out: list[ChunkRecord] = []
        self._oldest.pop(slot, None)
        for key in db.keys(from_key=start):
            if not key.startswith(start):
                break
            newest = chunk_newest(key, len(prefix))
            if newest >= horizon:
                self._oldest[slot] = newest
                break
            out.append((key, None))
        return out


def remember_again(
    db: Any, partition: int, remember: Mapping[str, Iterable[ToRemember]]
) -> list[ChunkRecord]:
    """Write to ``db`` the ids of accounts rebuilt from the ledger (``account -> items``) that it
    lacks: event ids with their charges, void and correction markers, amended charges. Returns
    the chunks written, for the changelog."""
    store = IdStore(lambda _: db)
    for account_id, items in remember.items():
        prefix = account_prefix(account_id)
        for item in items:
            if item.amended and item.charge is not None:
                store.set_charge(partition, prefix, item.event_id, item.at, item.charge)
                continue
            if item.correction:
                h = correction_marker(item.event_id)
                if not store.contains(partition, prefix, h):
                    store.keep(partition, prefix, h, item.at)
                continue
            h = void_marker(item.event_id) if item.void else id_hash(item.event_id)
            if not store.contains(partition, prefix, h):
                store.add(partition, prefix, h, item.at, item.charge)
    chunks = store.flush(partition)
    if chunks:
        write_chunks(db, chunks)
    return chunks


class StoreIds:
    """One account's remembered ids and charges as the engine sees them
    (``metering.domain.IdMemory`` and ``ChargeMemory``).

    ``legacy`` is the window the account's state carried before this store existed: its ids
    are still honoured, so an upgrade never charges a redelivered event twice."""

    __slots__ = (
        "_last",
        "_looked_up",
        "_next_expire",
        "_partition",
        "_prefix",
        "_store",
        "legacy",
        "watermark",
    )

    def __init__(self, store: IdStore, partition: int, prefix: bytes) -> None:
        self._store = store
        self._partition = partition
        self._prefix = prefix
        self._last: tuple[str, bytes] = ("", b"")
        self.legacy: Any = None
        self.watermark = _NEVER
        self._next_expire = _NEVER
        self._looked_up: tuple[str, bytes, int] | None = None
        """(event id, charge, versions) of the last :meth:`get`: an amend gets the charge,
        then puts the new one, and :meth:`put` need not read the versions again."""

    def _hash(self, event_id: str) -> bytes:
        last = self._last
        if last[0] == event_id and last[1]:
            return last[1]
        h = id_hash(event_id)
        self._last = (event_id, h)
        return h

    def seen(self, event_id: str) -> bool:
        legacy = self.legacy
        if legacy is not None and legacy.seen(event_id):
            return True
        return self._store.contains(self._partition, self._prefix, self._hash(event_id))

    def remember(self, event_id: str, at: int) -> None:
        self._store.add(self._partition, self._prefix, self._hash(event_id), at)

    def get(self, event_id: str) -> ChargeRecord | None:
        store, partition, prefix = self._store, self._partition, self._prefix
        data, versions = store.current_charge(partition, prefix, event_id)
        self._looked_up = (event_id, data, versions)
        if not data:
            return None
        voided = store.contains(partition, prefix, void_marker(event_id))
        return decode_charge(data, event_id, voided)

    def put(self, record: ChargeRecord) -> None:
        """The event's charge from now on: its first, or an amended one (a new version)."""
        event_id = record.charge.event_id
        looked_up, self._looked_up = self._looked_up, None
        current = looked_up[1:] if looked_up is not None and looked_up[0] == event_id else None
        self._store.set_charge(
            self._partition,
            self._prefix,
            event_id,
            record.remembered_at,
            encode_charge(record),
            current,
        )

    def charged(self, parts: ChargeParts) -> None:
        h = self._hash(parts.event_id)
        self._store.attach(self._partition, self._prefix, h, pack_charge(parts))

    def void(self, event_id: str, at: int) -> None:
        self._store.add(self._partition, self._prefix, void_marker(event_id), at)

    def corrected(self, command_id: str) -> bool:
        return self._store.contains(self._partition, self._prefix, correction_marker(command_id))

    def remember_correction(self, command_id: str, at: int) -> None:
        self._store.keep(self._partition, self._prefix, correction_marker(command_id), at)

    def expire(self, horizon: int) -> None:
        if horizon >= self._next_expire:
            self._next_expire = horizon + EXPIRE_STEP_MS
            self._store.expire(self._partition, self._prefix, horizon)
