"""A grant: a block of credits with a burn-down priority and an optional expiry."""

from __future__ import annotations

from typing import Any

from metering.domain.records import Allocation, GrantInfo

NEVER = 2**63 - 1
"""``expires_at`` stand-in for never-expiring grants in sort keys and wake-up times."""

SOURCES = frozenset({"plan", "purchase", "promotion", "adjustment", "rollover"})


class Grant:
    """Mutable (``remaining`` burns down) live grant inside an :class:`AccountState`."""

    __slots__ = (
        "amount",
        "cost_basis_micros",
        "effective_at",
        "expires_at",
        "grant_id",
        "priority",
        "remaining",
        "source",
        "warned",
    )

    def __init__(
        self,
        grant_id: str,
        source: str,
        amount: int,
        priority: int,
        effective_at: int,
        expires_at: int | None = None,
        cost_basis_micros: int | None = None,
        remaining: int | None = None,
        warned: bool = False,
    ) -> None:
        self.grant_id = grant_id
        self.source = source
        self.amount = amount
        self.remaining = amount if remaining is None else remaining
        self.priority = priority
        self.effective_at = effective_at
        self.expires_at = expires_at
        self.cost_basis_micros = cost_basis_micros
        self.warned = warned
        """Whether the GRANT_EXPIRING alert went out."""

    def burn_key(self) -> tuple[int, int, int, str]:
        """Burn order: priority, soonest expiry (never last), effective_at, grant_id."""
        expires = NEVER if self.expires_at is None else self.expires_at
        return (self.priority, expires, self.effective_at, self.grant_id)

    def info(self) -> GrantInfo:
        return GrantInfo(
            grant_id=self.grant_id,
            source=self.source,
            amount=self.amount,
            priority=self.priority,
            effective_at=self.effective_at,
            expires_at=self.expires_at,
            cost_basis_micros=self.cost_basis_micros,
        )

    @classmethod
    def from_info(cls, info: GrantInfo) -> Grant:
        """The grant an entry's ``grant`` describes, with nothing left yet (its allocation
        fills it): the inverse of :meth:`info`."""
        return cls(
            info.grant_id,
            info.source,
            info.amount,
            info.priority,
            info.effective_at,
            info.expires_at,
            info.cost_basis_micros,
            remaining=0,
        )

    def to_json(self) -> list[Any]:
        return [
            self.grant_id,
            self.source,
            self.amount,
            self.remaining,
            self.priority,
            self.effective_at,
            self.expires_at,
            self.cost_basis_micros,
            self.warned,
        ]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Grant:
        gid, source, amount, remaining, priority, effective_at, expires_at, cost, warned = raw
        return cls(gid, source, amount, priority, effective_at, expires_at, cost, remaining, warned)

    def __repr__(self) -> str:
        return f"Grant({self.grant_id!r}, {self.source}, {self.remaining}/{self.amount})"


_new = tuple.__new__


def drawable(grants: list[Grant], now: int) -> int:
    """What a debit at account time ``now`` may draw: the remaining of grants in effect."""
    return sum(g.remaining for g in grants if g.effective_at <= now)


def burn(grants: list[Grant], need: int, now: int) -> tuple[list[Allocation], int]:
    """Draw ``need`` from ``grants`` (kept in burn order) for a debit at account time ``now``.

    The one burn-down rule of every debit (usage and negative adjustments): grants are drawn in
    order, and a grant is drawn only once ``now`` (the account's event-time clock) reaches its
    ``effective_at``. Returns the allocations (negative deltas, one per grant drawn) and what
    is left uncovered. Mutates each drawn grant's ``remaining``.
    """
    allocations: list[Allocation] = []
    for g in grants:
        left = g.remaining
        if left and g.effective_at <= now:
            if left >= need:
                g.remaining = left - need
                # tuple.__new__ skips NamedTuple's Python-level __new__ (the usage hot path).
                allocations.append(_new(Allocation, (g.grant_id, -need)))
                return allocations, 0
            g.remaining = 0
            allocations.append(_new(Allocation, (g.grant_id, -left)))
            need -= left
    return allocations, need
