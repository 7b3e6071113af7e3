"""Time: what event time alone does to an account (first touch, grant expiry, expiring
notices, the period reset with its rollover), in time order.

The engine calls :func:`advance` whenever an account's clock passes its next wake-up (usage,
commands, sweeps); :func:`start` opens an account's first period. No wall clock: ``now`` is
always event time.
"""

from __future__ import annotations

from metering.domain.config import EngineConfig
from metering.domain.entries import add_grant, emit, refresh_grants, remove_grant
from metering.domain.errors import InvalidAccountId
from metering.domain.grants import Grant
from metering.domain.identifiers import identifier_problem
from metering.domain.periods import next_anchor_after, period_bounds
from metering.domain.plans import PlanCatalog, resolve_terms
from metering.domain.records import AlertKind, CreditAlert, EntryType, LedgerEntry
from metering.domain.state import AccountState
from metering.domain.terms import current_plan, plan_grant, set_terms


def start(
    config: EngineConfig,
    plans: PlanCatalog,
    state: AccountState,
    at: int,
    recorded_at: int,
    entries: list[LedgerEntry],
) -> None:
    """First touch of an account: open its first period (and give the default plan).

    The account id is checked here, once per account rather than once per event: an id the
    Redis key layout cannot hold must never get a ledger (it goes to the DLQ instead)."""
    problem = identifier_problem(state.account_id)
    if problem is not None:
        raise InvalidAccountId(f"account_id {problem}")
    anchor = state.terms.anchor_day
    state.period_start, state.period_end = period_bounds(at, anchor)
    state.prev_period_start = period_bounds(state.period_start - 1, anchor)[0]
    if config.default_plan is not None:
        plan = plans.get(config.default_plan)
        assert plan is not None
        cause = f"{state.account_id}/default-plan"
        set_terms(
            config,
            state,
            plan,
            state.override,
            EntryType.PLAN_ASSIGNED,
            cause,
            at,
            recorded_at,
            entries,
        )
    refresh_grants(config, state)


def advance(
    config: EngineConfig,
    plans: PlanCatalog,
    state: AccountState,
    now: int,
    recorded_at: int,
    entries: list[LedgerEntry],
    alerts: list[CreditAlert],
) -> None:
    """Expire grants and close periods due at or before ``now``, in time order."""
    while True:
        end = state.period_end
        due: Grant | None = None
        for g in state.grants:
            e = g.expires_at
            if (
                e is not None
                and e <= now
                and e < end
                and (due is None or (e, g.grant_id) < (due.expires_at or 0, due.grant_id))
            ):
                due = g
        if due is not None:
            expire(state, due, recorded_at, entries)
        elif end <= now:
            reset(config, plans, state, recorded_at, entries)
        else:
            break
    notice = config.expiring_notice_ms
    sources = config.expiring_notice_sources
    for g in state.grants:
        if (
            not g.warned
            and g.remaining
            and g.source in sources
            and g.expires_at is not None
            and g.expires_at - notice <= now
        ):
            g.warned = True
            alerts.append(
                CreditAlert(
                    f"{state.account_id}/expiring/{g.grant_id}",
                    state.account_id,
                    AlertKind.GRANT_EXPIRING,
                    state.balance,
                    f"{state.account_id}/expiry/{g.grant_id}",
                    now,
                    state.period_start,
                    state.period_end,
                    grant_id=g.grant_id,
                    amount=g.remaining,
                    message=f"{g.remaining} micro-credits expire at {g.expires_at}",
                )
            )
    refresh_grants(config, state)


def expire(state: AccountState, grant: Grant, recorded_at: int, entries: list[LedgerEntry]) -> None:
    """GRANT_EXPIRED at the grant's own ``expires_at``: what it had left leaves the balance."""
    cause = f"{state.account_id}/expiry/{grant.grant_id}"
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


def reset(
    config: EngineConfig,
    plans: PlanCatalog,
    state: AccountState,
    recorded_at: int,
    entries: list[LedgerEntry],
) -> None:
    """Close the period at ``period_end``: expire its plan grant, roll over, grant anew."""
    boundary = state.period_end
    cause = f"{state.account_id}/period/{boundary}"
    period_grant = state.grant(state.plan_grant_id) if state.plan_grant_id else None
    unused = 0
    if period_grant is not None:
        unused = period_grant.remaining
        remove_grant(
            state,
            period_grant,
            EntryType.GRANT_EXPIRED,
            cause,
            boundary,
            recorded_at,
            entries,
            reason="period_end",
        )
    for g in [g for g in state.grants if g.expires_at is not None and g.expires_at <= boundary]:
        expire(state, g, recorded_at, entries)
    state.terms = terms = resolve_terms(current_plan(plans, state), state.override)
    state.prev_period_start = state.period_start
    state.period_start = boundary
    state.period_end = next_anchor_after(boundary, terms.anchor_day)
    state.overage = 0
    state.period_used = 0
    state.alerted = 0
    state.plan_carry = 0
    state.plan_grant_id = None
    emit(
        state,
        entries,
        EntryType.PERIOD_RESET,
        0,
        (),
        cause,
        boundary,
        recorded_at,
        terms=terms.published(),
    )
    cap = terms.rollover_cap
    rollover = min(unused, cap) if cap is not None else 0
    if rollover > 0:
        grant = Grant(
            f"rollover:{boundary}",
            "rollover",
            rollover,
            config.priorities["rollover"],
            boundary,
            state.period_end,
        )
        add_grant(config, state, grant, EntryType.ROLLOVER, cause, boundary, recorded_at, entries)
    if terms.monthly_credits:
        plan_grant(
            config,
            state,
            f"plan:{boundary}",
            terms.monthly_credits,
            boundary,
            cause,
            recorded_at,
            entries,
        )
