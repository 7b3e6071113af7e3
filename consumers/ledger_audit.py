"""Audit of the credit ledger on its own terms: pure, no I/O.

``metering reconcile`` compares ClickHouse, the ledger topic and Redis with each other, which
cannot catch a ledger that is wrong everywhere. This module checks the ledger itself, per
account, in the order the entries were written (one account's entries live in one partition):

* ``seq`` starts at 1 and grows by exactly one per entry: ``seq_gap`` (a jump forward) and
  ``seq_restart`` (back to 1, or any step back or repeat);
* ``entry_id`` is unique across the whole ledger, all accounts (``duplicate_entry_id``);
* the rules of :func:`metering.domain.fold`, the domain's executable specification of a
  ledger, restated so that every violation is reported instead of the first one raised:
  ``balance_after`` is the previous entry's ``balance_after`` (0 before the first) plus the
  sum of the entry's allocations (``balance_after``); a balance-changing entry's ``amount``
  equals that sum (``amount``); ``overage_after`` is the previous one minus an OVERAGE's
  amount, 0 after PERIOD_RESET, otherwise unchanged (``overage_after``); each grant's
  remaining, the running sum of its allocation deltas, stays within ``[0, amount]`` where
  ``amount`` is the one the creating entry's ``grant`` carries (``grant_bounds``);
* beyond ``fold``: ``overage_after`` is never negative (``overage_negative``), allocations
  only touch grants an earlier entry created (``unknown_grant``), and no entry creates a
  grant id that already exists (``grant_recreated``).

The balance and overage checks are links between consecutive entries of an account: each
compares an entry with the one before it as written, so a ledger that diverges once reports
that entry once, and a single altered entry breaks the two links around it. Up to an
account's first violation the audit and ``fold`` see the same state, so ``fold`` raises on an
account's entries exactly when the audit reports one of :data:`FOLD_KINDS`, first at the entry
``fold`` names (a unit test holds the two to that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from metering.domain import BALANCE_TYPES, EntryType, LedgerEntry

SEQ_GAP = "seq_gap"
SEQ_RESTART = "seq_restart"
DUPLICATE_ENTRY_ID = "duplicate_entry_id"
AMOUNT = "amount"
BALANCE_AFTER = "balance_after"
OVERAGE_AFTER = "overage_after"
OVERAGE_NEGATIVE = "overage_negative"
GRANT_BOUNDS = "grant_bounds"
UNKNOWN_GRANT = "unknown_grant"
GRANT_RECREATED = "grant_recreated"

FOLD_KINDS = frozenset({SEQ_GAP, SEQ_RESTART, AMOUNT, BALANCE_AFTER, OVERAGE_AFTER, GRANT_BOUNDS})
"""The violation kinds :func:`metering.domain.fold` raises on (the others it lets through)."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken ledger invariant at one entry. ``str()`` is the line reconcile prints."""

    account: str
    seq: int
    entry_id: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"ledger: {self.account} seq {self.seq}: {self.message}"


@dataclass(slots=True)
class _Account:
    """What the audit knows of one account after its last entry (as written)."""

    seq: int = 0
    balance: int = 0
    overage: int = 0
    remaining: dict[str, int] = field(default_factory=dict)
    amounts: dict[str, int] = field(default_factory=dict)


class LedgerAudit:
    """Feed entries in ledger order with :meth:`add`; read :attr:`violations` at any point.

    Memory: one small record per account and grant, and every ``entry_id`` seen (the
    uniqueness check spans the whole ledger).
    """

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.entries = 0
        self._accounts: dict[str, _Account] = {}
        self._entry_ids: dict[str, tuple[str, int]] = {}

    @property
    def accounts(self) -> int:
        return len(self._accounts)

    def extend(self, entries: Iterable[LedgerEntry]) -> None:
        for entry in entries:
            self.add(entry)

    def add(self, e: LedgerEntry) -> None:
        self.entries += 1
        acct = self._accounts.get(e.account_id)
        if acct is None:
            acct = self._accounts[e.account_id] = _Account()

        expected = acct.seq + 1
        if e.seq > expected:
            self._report(e, SEQ_GAP, f"seq gap (expected {expected})")
        elif e.seq < expected:
            what = "restarts" if e.seq == 1 else "repeats" if e.seq == acct.seq > 0 else "goes back"
            self._report(e, SEQ_RESTART, f"seq {what} (expected {expected})")
        acct.seq = e.seq

        first = self._entry_ids.get(e.entry_id)
        if first is None:
            self._entry_ids[e.entry_id] = (e.account_id, e.seq)
        else:
            self._report(
                e,
                DUPLICATE_ENTRY_ID,
                f"entry_id {e.entry_id!r} duplicates the entry at {first[0]} seq {first[1]}",
            )

        if e.grant is not None:
            grant_id = e.grant.grant_id
            if grant_id in acct.amounts:
                self._report(
                    e,
                    GRANT_RECREATED,
                    f"grant {grant_id} created again (it holds {acct.remaining[grant_id]} "
                    f"of {acct.amounts[grant_id]})",
                )
            acct.remaining[grant_id] = 0  # as fold: the creating entry's allocation fills it
            acct.amounts[grant_id] = e.grant.amount

        delta = 0
        for grant_id, amount in e.allocations:
            delta += amount
            cap = acct.amounts.get(grant_id)
            if cap is None and grant_id not in acct.remaining:
                self._report(e, UNKNOWN_GRANT, f"allocation to grant {grant_id} never created")
            left = acct.remaining.get(grant_id, 0) + amount
            acct.remaining[grant_id] = left
            if left < 0 or (cap is not None and left > cap):
                bounds = f"[0, {cap}]" if cap is not None else "[0, ...]"
                self._report(
                    e,
                    GRANT_BOUNDS,
                    f"grant {grant_id} would hold {left}, outside {bounds} "
                    f"(allocation {amount:+d})",
                )

        if e.type in BALANCE_TYPES and delta != e.amount:
            self._report(
                e, AMOUNT, f"{e.type.value} amount {e.amount} != sum of allocations {delta}"
            )

        balance = acct.balance + delta
        if e.balance_after != balance:
            self._report(
                e,
                BALANCE_AFTER,
                f"balance_after {e.balance_after} != previous balance_after {acct.balance} "
                f"+ allocations {delta:+d} = {balance}",
            )
        acct.balance = e.balance_after

        if e.type is EntryType.OVERAGE:
            overage, why = acct.overage - e.amount, f"- OVERAGE amount {e.amount}"
        elif e.type is EntryType.PERIOD_RESET:
            overage, why = 0, "(PERIOD_RESET clears it)"
        else:
            overage, why = acct.overage, "(unchanged)"
        if e.overage_after != overage:
            self._report(
                e,
                OVERAGE_AFTER,
                f"overage_after {e.overage_after} != previous overage_after {acct.overage} "
                f"{why} = {overage}",
            )
        if e.overage_after < 0:
            self._report(e, OVERAGE_NEGATIVE, f"overage_after {e.overage_after} is negative")
        acct.overage = e.overage_after

    def _report(self, e: LedgerEntry, kind: str, message: str) -> None:
        self.violations.append(Violation(e.account_id, e.seq, e.entry_id, kind, message))


def audit_ledger(entries: Iterable[LedgerEntry]) -> list[Violation]:
    """Every violation of the ledger's invariants, in ledger order (empty for a sound ledger).

    ``entries`` is the whole ledger (any mix of accounts), each account's entries in the order
    they were written, e.g. a topic read partition by partition.
    """
    audit = LedgerAudit()
    audit.extend(entries)
    return audit.violations
