"""The restored tables must agree with the ledger before a partition is processed.

The ledger topic is the source of truth; the processor's table (RocksDB restored from its
changelog) is only a cache of it. Both are written in one Kafka transaction, so after a correct
restore every account's ``seq`` equals the last ``seq`` the ledger holds for it. A restore that
lost state (docs/processor.md, "Exactly once", item 10) would start accounts again at seq 1; this
check finds that before anything is written, and the repair puts each such account right: from
its newest committed changelog record when that agrees with the ledger, else by catching a
snapshot up with the ledger. The id store, written in the same transactions, must remember
each account's last charged event (:func:`ids_lost`). Pure: the I/O is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metering.domain.catch_up import USAGE_ENTRY_TYPES, remembers_event
from pipeline.ports import EnginePort, ToRemember


@dataclass(frozen=True, slots=True)
class SeqMismatch:
    account_id: str
    restored_seq: int
    """0 when the restored table has no state for the account."""
    ledger_seq: int
    """0 when the ledger has no entry for the account."""

    def __str__(self) -> str:
        return (
            f"{self.account_id}: restored state at seq {self.restored_seq}, "
            f"ledger at seq {self.ledger_seq}"
        )


CHARGE_ENTRY_SUFFIXES = tuple(f":{t.value}" for t in USAGE_ENTRY_TYPES)
"""How the id of a ledger entry that charged (or turned away) a usage event ends: the engine
writes ``{event_id}:{type}``; corrections and events outside the dedupe window add a suffix."""


def ids_lost(
    last_charges: Mapping[str, Mapping[str, Any]],
    seqs: Mapping[str, int],
    remembered: Callable[[str, str], bool],
) -> list[SeqMismatch]:
    """Accounts whose last charged usage event (``last_charges``: account -> its ledger
    record) the restored id store does not remember (``remembered(account, event_id)``).

    The account table and the id store are written in one transaction, so a whole restore
    remembers every charged event still inside its window, the newest first of all. One that
    does not was restored from another point of the changelogs than its account: processing
    on, a re-sent (or re-read) event would be charged twice. Such an account agrees with the
    ledger by ``seq``; it is rebuilt from the ledger all the same, which remembers its ids
    again (``ledger_seq`` = ``restored_seq``)."""
    lost = []
    for account_id, record in last_charges.items():
        if not remembers_event(record["type"], record.get("reason")):
            continue
        if not remembered(account_id, record["cause_id"]):
            seq = seqs[account_id]
            lost.append(SeqMismatch(account_id, seq, seq))
    return sorted(lost, key=lambda m: m.account_id)


def mismatches(restored: Mapping[str, int], ledger: Mapping[str, int]) -> list[SeqMismatch]:
    """Every account whose restored ``seq`` differs from the ledger's last one."""
    out = [
        SeqMismatch(account, restored.get(account, 0), seq)
        for account, seq in ledger.items()
        if restored.get(account, 0) != seq
    ]
    out.extend(
        SeqMismatch(account, seq, 0)
        for account, seq in restored.items()
        if seq and account not in ledger
    )
    return sorted(out, key=lambda m: m.account_id)


@dataclass(slots=True)
class Repair:
    """How the accounts of a partition whose restored state disagreed with the ledger are put
    right (docs/processor.md, "The ledger is the source of truth")."""

    states: dict[str, bytes | None] = field(default_factory=dict)
    """account -> its state to write, or None to delete (state with no ledger behind it)"""
    remember: dict[str, list[ToRemember]] = field(default_factory=dict)
    """account -> ids to remember again, with their charges (accounts rebuilt from the
    ledger)"""
    from_changelog: int = 0
    """accounts whose newest committed changelog record was the state the ledger expects"""
    from_ledger: int = 0
    """accounts rebuilt as a snapshot (or a new state) plus the ledger entries it lacked"""
    removed: int = 0


def repair_from_snapshots(
    wrong: Iterable[SeqMismatch],
    snapshots: Mapping[str, bytes | None],
    state_seq: Callable[[bytes], int],
) -> tuple[Repair, list[SeqMismatch]]:
    """First step: each account's newest committed changelog record (``snapshots``), read from
    the changelog topic itself rather than from the local store. It was written in the same
    transaction as the ledger entries, so it is exact when its ``seq`` is the ledger's. Returns
    the repair so far and the accounts that need the ledger."""
    repair = Repair()
    left: list[SeqMismatch] = []
    for m in wrong:
        snapshot = snapshots.get(m.account_id)
        if m.ledger_seq == 0:
            repair.states[m.account_id] = None
            repair.removed += 1
        elif snapshot is not None and state_seq(snapshot) == m.ledger_seq:
            repair.states[m.account_id] = snapshot
            repair.from_changelog += 1
        else:
            left.append(m)
    return repair, left


def repair_from_ledger(
    repair: Repair,
    left: Iterable[SeqMismatch],
    snapshots: Mapping[str, bytes | None],
    entries: Mapping[str, Sequence[Mapping[str, Any]]],
    engine: EnginePort,
) -> None:
    """Second step: the snapshot (when it is behind the ledger, else a new state) caught up with
    the account's ledger entries (``entries``: records in ``seq`` order). Raises ``ValueError``
    when the ledger itself is broken: then no state can be trusted and an operator must look."""
    for m in left:
        snapshot = snapshots.get(m.account_id)
        if snapshot is not None and engine.state_seq(snapshot) > m.ledger_seq:
            snapshot = None  # ahead of the ledger: state of an aborted transaction
        state, event_ids = engine.catch_up(m.account_id, snapshot, entries.get(m.account_id, ()))
        if engine.state_seq(state) != m.ledger_seq:
            raise ValueError(
                f"{m.account_id}: rebuilt at seq {engine.state_seq(state)}, "
                f"the ledger is at {m.ledger_seq}"
            )
        repair.states[m.account_id] = state
        repair.remember[m.account_id] = event_ids
        repair.from_ledger += 1
