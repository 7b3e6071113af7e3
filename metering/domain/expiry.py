"""A grant's expiry: at its own ``expires_at``, what it had left leaves the balance
(GRANT_EXPIRED; nothing is written for a grant that expires empty)."""

from __future__ import annotations

from metering.domain.entries import EXPIRY, remove_grant, time_cause
from metering.domain.grants import Grant
from metering.domain.records import EntryType, LedgerEntry
from metering.domain.state import AccountState


def expire(state: AccountState, grant: Grant, recorded_at: int, entries: list[LedgerEntry]) -> None:
    """GRANT_EXPIRED at the grant's own ``expires_at``: what it had left leaves the balance."""
    cause = time_cause(state.account_id, EXPIRY, grant.grant_id)
    if grant.grant_id == state.plan_grant_id:
        state.plan_grant_id = None
    remove_grant(
        state,
        grant,
        EntryType.GRANT_EXPIRED,
        cause,
        grant.expires_at or 0,
        recorded_at,
        entries,
        reason="expired",
    )
