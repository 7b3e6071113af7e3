"""Writing ledger entries, and opening and closing grants (which always write one).

Every entry the engine emits outside the usage hot path goes through :func:`emit`, so ``seq``
advances by exactly one per entry and each entry carries the balances as they are after it.
"""

from __future__ import annotations

from metering.domain.config import EngineConfig
from metering.domain.grants import Grant
from metering.domain.records import AccountTerms, Allocation, EntryType, GrantInfo, LedgerEntry
from metering.domain.state import AccountState

DEFAULT_PLAN = "default-plan"
EXPIRY = "expiry"
PERIOD = "period"
TIME_CAUSES = (DEFAULT_PLAN, EXPIRY, PERIOD)
"""What time alone does to an account; each gives its entries a cause of :func:`time_cause`."""


def time_cause(account_id: str, what: str, detail: object = None) -> str:
    """The cause of entries written by time alone: ``{account}/{what}[/{detail}]``."""
    return f"{account_id}/{what}" if detail is None else f"{account_id}/{what}/{detail}"


def is_time_cause(account_id: str, cause: str) -> bool:
    """Whether ``cause`` is a :func:`time_cause` of the account (not a command or event id)."""
    head = account_id + "/"
    return cause.startswith(head) and cause[len(head) :].partition("/")[0] in TIME_CAUSES


def entry_suffix(entry: LedgerEntry) -> str:
    """The ``suffix`` :func:`emit` put in the entry id (the grant of an opening or closing
    entry); empty when it has none."""
    return entry.entry_id.rpartition(f":{entry.type.value}:")[2]


def emit(
    state: AccountState,
    entries: list[LedgerEntry],
    entry_type: EntryType,
    amount: int,
    allocations: tuple[Allocation, ...],
    cause: str,
    at: int,
    recorded_at: int,
    *,
    suffix: str | None = None,
    reason: str | None = None,
    grant: GrantInfo | None = None,
    terms: AccountTerms | None = None,
) -> None:
    """Append the account's next ledger entry (``seq`` + 1) with its balances as they are now;
    the entry id is ``{cause}:{type}[:{suffix}]``, unique per account forever."""
    state.seq += 1
    entry_id = f"{cause}:{entry_type.value}"
    if suffix is not None:
        entry_id = f"{entry_id}:{suffix}"
    entries.append(
        LedgerEntry(
            entry_id=entry_id,
            account_id=state.account_id,
            seq=state.seq,
            type=entry_type,
            amount=amount,
            allocations=allocations,
            balance_after=state.balance,
            overage_after=state.overage,
            cause_id=cause,
            occurred_at=at,
            recorded_at=recorded_at,
            period_start=state.period_start,
            period_end=state.period_end,
            reason=reason,
            grant=grant,
            terms=terms,
        )
    )


def add_grant(
    config: EngineConfig,
    state: AccountState,
    grant: Grant,
    entry_type: EntryType,
    cause: str,
    at: int,
    recorded_at: int,
    entries: list[LedgerEntry],
    reason: str | None = None,
) -> None:
    """Open ``grant``: it joins the live grants and its entry (``entry_type``) is written."""
    state.grants.append(grant)
    state.balance += grant.amount
    emit(
        state,
        entries,
        entry_type,
        grant.amount,
        (Allocation(grant.grant_id, grant.amount),),
        cause,
        at,
        recorded_at,
        suffix=grant.grant_id,
        grant=grant.info(),
        reason=reason,
    )
    refresh_grants(config, state)


def remove_grant(
    state: AccountState,
    grant: Grant,
    entry_type: EntryType,
    cause: str,
    at: int,
    recorded_at: int,
    entries: list[LedgerEntry],
    reason: str | None = None,
) -> None:
    """Close ``grant`` (expired or voided): what it had left leaves the balance."""
    state.grants.remove(grant)
    left = grant.remaining
    grant.remaining = 0
    if not left and entry_type is EntryType.GRANT_EXPIRED:
        return  # nothing to take away; a zero entry would only be noise
    state.balance -= left
    allocations = (Allocation(grant.grant_id, -left),) if left else ()
    emit(
        state,
        entries,
        entry_type,
        -left,
        allocations,
        cause,
        at,
        recorded_at,
        suffix=grant.grant_id,
        reason=reason,
    )


def refresh_grants(config: EngineConfig, state: AccountState) -> None:
    """Drop spent grants (the current plan grant stays until its period ends), re-sort, and
    recompute the cached wake-up time and next threshold."""
    keep = state.plan_grant_id
    if any(not g.remaining and g.grant_id != keep for g in state.grants):
        live = []
        for g in state.grants:
            if g.remaining or g.grant_id == keep:
                live.append(g)
            elif g.expires_at is None or g.expires_at > state.clock:
                state.spent[g.grant_id] = g  # a voided usage event may refill it
        state.grants = live
    if state.spent:
        forget_spent(state)
    state.refresh(config.expiring_notice_ms, config.expiring_notice_sources)


def forget_spent(state: AccountState) -> None:
    """Spent grants past their expiry can never be refilled: forget them."""
    clock = state.clock
    gone = [k for k, g in state.spent.items() if g.expires_at is not None and g.expires_at <= clock]
    for grant_id in gone:
        del state.spent[grant_id]
