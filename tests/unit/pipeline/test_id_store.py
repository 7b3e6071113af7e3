"""The processor's event-id store: chunks in the changelog, lookup keys locally, expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict

from metering.domain.charges import ChargeParts
from pipeline.id_store import IdStore, write_chunks

HOUR = 3_600_000


class Partitions:
    """One RocksDB per partition, as the faust table keeps them; ``write`` is the live path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dbs: dict[int, Rdict] = {}

    def db(self, partition: int) -> Rdict:
        if partition not in self.dbs:
            path = str(self.root / f"p{partition}")
            self.dbs[partition] = Rdict(path, options=Options(raw_mode=True))
        return self.dbs[partition]

    def write(self, partition: int, records: list[Any]) -> None:
        write_chunks(self.db(partition), records)


def test_an_id_is_seen_in_its_batch_after_its_flush_and_after_a_restore(tmp_path: Path) -> None:
    parts = Partitions(tmp_path / "live")
    store = IdStore(parts.db)
    view = store.view(0, "acct-1")
    assert not view.seen("e1")
    view.remember("e1", 1000)
    assert view.seen("e1")  # the same batch
    assert not store.view(0, "acct-2").seen("e1")  # ids are per account
    records = store.flush(0)
    assert len(records) == 1  # one chunk per account and batch
    parts.write(0, records)
    assert store.view(0, "acct-1").seen("e1")
    restored = Partitions(tmp_path / "restored")
    restored.write(0, records)  # what faust's restore does with the changelog
    assert IdStore(restored.db).view(0, "acct-1").seen("e1")


def test_ids_leave_once_the_horizon_passes_their_chunk(tmp_path: Path) -> None:
    parts = Partitions(tmp_path / "live")
    changelog: list[Any] = []
    store = IdStore(parts.db)

    def batch(at: int, *event_ids: str, horizon: int | None = None) -> None:
        view = store.view(0, "a")
        for event_id in event_ids:
            assert not view.seen(event_id)
            view.remember(event_id, at)
        if horizon is not None:
            view.expire(horizon)
        records = store.flush(0)
        parts.write(0, records)
        changelog.extend(records)

    batch(1 * HOUR, "old-1", "old-2")
    batch(2 * HOUR, "mid")
    batch(3 * HOUR, "new", horizon=2 * HOUR)  # the first chunk's newest (1 h) is before it
    view = store.view(0, "a")
    assert not view.seen("old-1") and not view.seen("old-2")
    assert view.seen("mid") and view.seen("new")
    tombstones = [key for key, value in changelog if value is None]
    assert len(tombstones) == 1
    # A restore of the whole changelog (chunk, then its tombstone) ends in the same place.
    restored = Partitions(tmp_path / "restored")
    restored.write(0, changelog)
    again = IdStore(restored.db).view(0, "a")
    assert not again.seen("old-1") and again.seen("mid") and again.seen("new")
    assert sorted(restored.db(0).keys()) == sorted(parts.db(0).keys())


def test_a_restore_batch_holding_a_chunk_and_its_tombstone_leaves_nothing(tmp_path: Path) -> None:
    parts = Partitions(tmp_path)
    store = IdStore(parts.db)
    store.view(1, "a").remember("x", 5)
    (chunk,) = store.flush(1)
    parts.write(1, [chunk, (chunk[0], None)])
    assert list(parts.db(1).keys()) == []


def _charge(event_id: str, amount: int) -> Any:
    from metering.domain.charges import ChargeRecord
    from metering.domain.records import Allocation
    from metering.domain.reversal import Charge

    charge = Charge(event_id, 1000, 0, (Allocation("g1", -amount),), 0)
    return ChargeRecord(charge, 10_000, "text_generation", "research", None, 1000)


def test_a_charge_travels_with_its_id_through_the_changelog_and_a_void_sticks(
    tmp_path: Path,
) -> None:
    parts = Partitions(tmp_path / "live")
    store = IdStore(parts.db)
    view = store.view(0, "a")
    view.remember("e1", 1000)
    view.put(_charge("e1", 7))
    view.remember("e2", 1000)  # charged nothing (e.g. rejected): no charge kept
    view.remember("e3", 1000)
    c = _charge("e3", 9)
    view.charged(
        ChargeParts(
            "e3", 1000, 0, 10_000, c.charge.allocations, 0, c.feature, c.subject, None, 1000
        )
    )
    assert view.get("e1") == _charge("e1", 7)  # the same batch
    assert view.get("e3") == c  # the hot path's parts make the same record
    first = store.flush(0)
    parts.write(0, first)
    view = store.view(0, "a")
    view.void("e1", 2000)
    second = store.flush(0)
    parts.write(0, second)

    restored = Partitions(tmp_path / "restored")
    restored.write(0, first + second)  # what faust's restore does with the changelog
    for db in (parts.db, restored.db):
        view = IdStore(db).view(0, "a")
        record = view.get("e1")
        assert record is not None and record.voided and record.charge.debit == 7
        assert view.seen("e1") and view.seen("e2") and view.get("e2") is None
        assert not view.seen("void-of-e1")  # the marker is no event id


def test_chunks_written_before_charges_were_kept_still_read(tmp_path: Path) -> None:
    from pipeline.id_store import account_prefix, id_hash

    prefix = account_prefix("a")
    old_key = prefix + b"c" + (1000 + (1 << 63)).to_bytes(8, "big") + id_hash("e1")
    parts = Partitions(tmp_path / "live")
    parts.write(0, [(old_key, id_hash("e1") + id_hash("e2"))])
    view = IdStore(parts.db).view(0, "a")
    assert view.seen("e1") and view.seen("e2") and view.get("e1") is None
    parts.write(0, [(old_key, None)])  # its expiry
    assert not IdStore(parts.db).view(0, "a").seen("e2")


def test_amended_charges_are_versions_that_survive_a_restore_and_expire_with_their_chunks(
    tmp_path: Path,
) -> None:
    parts = Partitions(tmp_path / "live")
    store = IdStore(parts.db)
    view = store.view(0, "a")
    view.remember("e1", 1000)
    view.put(_charge("e1", 7))
    view.put(_charge("e1", 8)._replace(remembered_at=1000))  # amended in the same batch
    first = store.flush(0)
    parts.write(0, first)
    view = store.view(0, "a")
    view.put(_charge("e1", 9)._replace(remembered_at=5000))  # amended again, a later batch
    second = store.flush(0)
    parts.write(0, second)
    restored = Partitions(tmp_path / "restored")
    restored.write(0, first + second)
    for db in (parts.db, restored.db):
        record = IdStore(db).view(0, "a").get("e1")
        assert record is not None and record.charge.debit == 9 and not record.voided
    view = store.view(0, "a")
    view.void("e1", 6000)
    parts.write(0, store.flush(0))
    record = store.view(0, "a").get("e1")
    assert record is not None and record.voided and record.charge.debit == 9
    # The event's own chunk leaves its window first: the event is forgotten, versions and all.
    view = store.view(0, "a")
    view.expire(2000)
    parts.write(0, store.flush(0))
    assert store.view(0, "a").get("e1") is None and not store.view(0, "a").seen("e1")


def test_a_correction_command_is_kept_through_the_changelog_and_past_every_expiry(
    tmp_path: Path,
) -> None:
    parts = Partitions(tmp_path / "live")
    store = IdStore(parts.db)
    view = store.view(0, "a")
    view.remember("e1", 1000)
    view.put(_charge("e1", 7))
    parts.write(0, store.flush(0))
    view = store.view(0, "a")
    view.void("e1", 5000)
    view.remember_correction("fix-1", 5000)
    assert view.corrected("fix-1")  # the same batch
    changelog = store.flush(0)
    parts.write(0, changelog)
    restored = Partitions(tmp_path / "restored")
    restored.write(0, changelog)
    for db in (parts.db, restored.db):
        view = IdStore(db).view(0, "a")
        assert view.corrected("fix-1") and not view.corrected("fix-2")
        assert not view.seen("fix-1")  # the marker is no event id
    assert not store.view(0, "b").corrected("fix-1")  # per account
    view = store.view(0, "a")
    view.expire(10_000)  # past every chunk: the event, its charge and its void leave
    expired = store.flush(0)
    assert expired and all(value is None for _, value in expired)
    parts.write(0, expired)
    view = store.view(0, "a")
    assert not view.seen("e1") and view.get("e1") is None
    assert view.corrected("fix-1")  # a command id applies at most once, for good


def test_a_rebuilt_account_remembers_its_corrections_in_the_store() -> None:
    """The ledger of an account with corrections gives back their command ids for the id store
    (``ToRemember(correction=True)``), not in the state: so a re-send stays a duplicate."""
    from metering.domain import CommandKind, CreditCommand, UsageEvent
    from metering.domain.charges import ChargeWindow
    from pipeline.engine_adapter import DomainEngine

    adapter = DomainEngine.from_files()
    engine = adapter.engine
    state = engine.new_state("a")
    state.attach_charges(ChargeWindow())
    t0 = 1_767_225_600_000
    entries = []
    steps = [
        CreditCommand("plan", "a", CommandKind.ASSIGN_PLAN, t0, plan_id="growth"),
        UsageEvent("e1", "a", "image_generation", {"images": 1}, t0 + 1),
        CreditCommand("fix", "a", CommandKind.VOID_USAGE, t0 + 2, event_id="e1"),
    ]
    for step in steps:
        if isinstance(step, UsageEvent):
            out = engine.apply_usage(state, step, step.occurred_at)
        else:
            out = engine.apply_command(state, step, step.issued_at)
        entries += [e.to_record() for e in out.entries]
    data, remember = adapter.catch_up("a", None, entries)
    corrections = [r for r in remember if r.correction]
    # Remembered at the account time the ledger knows then (the reversal carries the event's
    # time): with the void marker, and never before the charge it corrected.
    assert [(r.event_id, r.at) for r in corrections] == [("fix", t0 + 1)]
    assert [(r.event_id, r.at) for r in remember if r.void] == [("e1", t0 + 1)]
    rebuilt = adapter.load_state(data)
    assert not any(r.correction for r in remember if r.event_id != "fix")
    assert len(rebuilt.commands) == 1  # the plan's; the correction is the store's


def test_a_rebuild_remembers_again_what_the_store_lacks_correction_markers_kept(
    tmp_path: Path,
) -> None:
    from pipeline.id_store import remember_again
    from pipeline.ports import ToRemember

    parts = Partitions(tmp_path / "live")
    items = [
        ToRemember("e1", 1000, b""),
        ToRemember("e1", 2000, void=True),
        ToRemember("fix-1", 2000, correction=True),
    ]
    chunks = remember_again(parts.db(0), 0, {"a": items})
    assert remember_again(parts.db(0), 0, {"a": items}) == []  # nothing lacking any more
    view = IdStore(parts.db).view(0, "a")
    assert view.seen("e1") and view.corrected("fix-1")
    restored = Partitions(tmp_path / "restored")
    restored.write(0, chunks)
    assert IdStore(restored.db).view(0, "a").corrected("fix-1")
    store = IdStore(parts.db)
    store.view(0, "a").expire(10_000)
    parts.write(0, store.flush(0))
    view = IdStore(parts.db).view(0, "a")
    assert not view.seen("e1") and view.corrected("fix-1")
