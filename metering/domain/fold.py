"""Rebuild an account's balances from its ledger alone, checking the ledger's invariants.

This is the event-sourcing half of the engine: the ledger is the source of truth, and folding
it must give exactly what the engine holds (``AccountState.view()``). Projections (Redis) apply
the same rules, so this is also their executable specification:

* ``allocations`` are signed deltas of each grant's ``remaining``; their sum is the balance
  change, so ``balance_after == previous balance_after + sum(allocations)`` for every entry;
* an entry carrying ``grant`` (GRANT_CREATED, ROLLOVER, positive ADJUSTMENT) opens that grant;
* ``overage_after`` only grows by OVERAGE entries, drops to 0 on PERIOD_RESET, and drops by at
  most the overage part of a USAGE_REVERSED (``amount`` minus its allocations);
* ``seq`` increases by exactly one per entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from metering.domain.errors import LedgerError
from metering.domain.records import EntryType, LedgerEntry
from metering.domain.state import AccountView

BALANCE_TYPES = frozenset(
    {
        EntryType.GRANT_CREATED,
        EntryType.ROLLOVER,
        EntryType.USAGE_DEBIT,
        EntryType.GRANT_EXPIRED,
        EntryType.GRANT_VOIDED,
        EntryType.ADJUSTMENT,
    }
)
"""Entry types whose ``amount`` changes the balance (conservation sums exactly these)."""


def fold(entries: Iterable[LedgerEntry], *, start: AccountView | None = None) -> AccountView:
    """Fold one account's entries (in ``seq`` order) into an :class:`AccountView`.

    Raises :class:`LedgerError` on a gap in ``seq``, a mismatching ``balance_after`` or
    ``overage_after``, or a grant whose remaining would leave ``[0, amount]``.
    """
    seq = 0 if start is None else start.seq
    balance = 0 if start is None else start.balance
    overage = 0 if start is None else start.overage
    remaining: dict[str, int] = {} if start is None else dict(start.grants)
    amounts: dict[str, int] = {}
    """Amounts of the grants opened by these entries: a grant of ``start`` may be refilled
    (a reversal) up to an amount the view does not carry, so only its floor is checked."""
    for e in entries:
        if e.seq != seq + 1:
            raise LedgerError(f"{e.entry_id}: seq {e.seq} after {seq}")
        seq = e.seq
        if e.grant is not None:
            remaining[e.grant.grant_id] = 0
            amounts[e.grant.grant_id] = e.grant.amount
        delta = 0
        for grant_id, amount in e.allocations:
            left = remaining.get(grant_id, 0) + amount
            if left < 0 or left > amounts.get(grant_id, left):
                raise LedgerError(f"{e.entry_id}: grant {grant_id} would hold {left}")
            remaining[grant_id] = left
            delta += amount
        if e.type in BALANCE_TYPES and delta != e.amount:
            raise LedgerError(f"{e.entry_id}: amount {e.amount} != allocations {delta}")
        balance += delta
        if e.balance_after != balance:
            raise LedgerError(f"{e.entry_id}: balance_after {e.balance_after} != {balance}")
        if e.type is EntryType.OVERAGE:
            overage -= e.amount
        elif e.type is EntryType.USAGE_REVERSED:
            # Its overage part lowers the current overage only when the event was of this
            # period, so the entry states the drop; it may not exceed that part.
            dropped = overage - e.overage_after
            if delta < 0 or not 0 <= dropped <= e.amount - delta:
                raise LedgerError(f"{e.entry_id}: reverses {e.amount}, {delta} to grants")
            overage = e.overage_after
        elif e.type is EntryType.PERIOD_RESET:
            overage = 0
        if e.overage_after != overage:
            raise LedgerError(f"{e.entry_id}: overage_after {e.overage_after} != {overage}")
    return AccountView(
        seq=seq,
        balance=balance,
        overage=overage,
        grants={g: r for g, r in remaining.items() if r},
    )


def conserved_balance(entries: Iterable[LedgerEntry]) -> int:
    """granted - debited - expired - voided +/- adjustments + reversed debits: the conservation
    invariant's sum."""
    total = 0
    for e in entries:
        if e.type in BALANCE_TYPES:
            total += e.amount
        elif e.type is EntryType.USAGE_REVERSED:
            total += sum(a.amount for a in e.allocations)  # its overage part is not balance
    return total
