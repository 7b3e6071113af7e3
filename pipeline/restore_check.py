"""The restored account table must agree with the ledger before a partition is processed.

The ledger topic is the source of truth; the processor's table (RocksDB restored from its
changelog) is only a cache of it. Both are written in one Kafka transaction, so after a correct
restore every account's ``seq`` equals the last ``seq`` the ledger holds for it. A restore that
lost state (docs/processor.md, "Exactly once", item 10) would start accounts again at seq 1; this
check finds that before anything is written. Pure: the I/O is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


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


def last_seqs(heads: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The last ``seq`` per account of a ledger partition read in offset order."""
    last: dict[str, int] = {}
    for account_id, seq in heads:
        last[account_id] = seq
    return last


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
