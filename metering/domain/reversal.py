"""Reversing a usage charge: what a void (and the first half of an amend) gives back, and where.

The rule of ``void_usage`` (:mod:`metering.domain.corrections`); docs/corrections.md has the
whole design.

A :class:`Charge` is what the ledger took for one usage event: the debit drawn from each grant,
and the overage, in the period the event was attributed to. Reversing it:

1. **Each part of the debit goes back to the grant it was drawn from, if that grant is still
   live**: not expired and not voided, even if it was used up since (it is refilled). The
   grant's ``remaining`` grows by that part. It cannot pass the grant's ``amount``, because the
   part was drawn from it.
2. **The parts whose grants are gone** (expired, voided, or replaced at a period reset) come
   back as one ``correction`` grant, ``correction:<event_id>``, which expires at the end of the
   current period. Those credits had a term, and the term is over:
   - given back for good, they would outlive the grant they came from;
   - given back with their old expiry, they would be worth nothing.

   Until the end of the current period returns their value on the plan's own rhythm, and keeps
   the liability bounded.
3. **Overage** is reversed against the overage of the event's own period:
   - if that is the current period, its overage drops by the charge's overage;
   - if it is an earlier period, that period's overage is final (billed), so the reversal is a
     credit recorded against that period, and the current overage stays as it is.
"""

from __future__ import annotations

from typing import NamedTuple

from metering.domain.grants import Grant
from metering.domain.records import Allocation

CORRECTION_SOURCE = "correction"


def correction_grant_id(event_id: str) -> str:
    return f"{CORRECTION_SOURCE}:{event_id}"


class Charge(NamedTuple):
    """What one usage event was charged: its debit's draws (negative, as the ledger wrote
    them) and its overage, in the period it was attributed to. (A tuple: corrections build
    and read them on the processor's hot path.)"""

    event_id: str
    occurred_at: int
    period_start: int
    allocations: tuple[Allocation, ...]
    overage: int

    @property
    def debit(self) -> int:
        """Micro-credits drawn from grants (positive)."""
        return -sum(a.amount for a in self.allocations)


class Reversal(NamedTuple):
    returned: tuple[Allocation, ...]
    """Positive parts given back to grants that are still live, in the charge's order."""
    correction: Grant | None
    """The grant that carries the parts whose grants are gone (None when there are none)."""
    overage_now: int
    """How much the current period's overage drops."""
    overage_reversed: int
    """The charge's overage, reversed against its own period (recorded on the ledger)."""

    @property
    def total(self) -> int:
        """What the balance grows by: every part of the debit, live or not."""
        returned = sum(a.amount for a in self.returned)
        return returned + (self.correction.amount if self.correction else 0)


def reverse(
    charge: Charge,
    grants: list[Grant],
    *,
    at: int,
    period_start: int,
    period_end: int,
    priority: int,
    spent: dict[str, Grant] | None = None,
) -> Reversal:
    """Give ``charge`` back to ``grants`` (the account's live grants, mutated like a burn).

    ``spent`` holds used-up grants that are still live: one the charge drew from is refilled
    and moves back to ``grants``. ``period_start``/``period_end`` are the account's current
    period and ``at`` the account's clock. Returns what went where. The caller re-sorts the
    grants, adds the correction grant (in burn order) and writes the entries.
    """
    spent = {} if spent is None else spent
    live = {g.grant_id: g for g in grants}
    returned: list[Allocation] = []
    gone = 0
    for grant_id, drawn in charge.allocations:
        part = -drawn
        grant = live.get(grant_id)
        if grant is None and grant_id in spent:
            grant = live[grant_id] = spent.pop(grant_id)
            grants.append(grant)
        if grant is None or (grant.expires_at is not None and grant.expires_at <= at):
            gone += part
            continue
        grant.remaining += part
        returned.append(Allocation(grant_id, part))
    correction = None
    if gone:
        correction = Grant(
            correction_grant_id(charge.event_id),
            CORRECTION_SOURCE,
            gone,
            priority,
            at,
            period_end,
        )
    same_period = charge.period_start == period_start
    return Reversal(
        returned=tuple(returned),
        correction=correction,
        overage_now=charge.overage if same_period else 0,
        overage_reversed=charge.overage,
    )
