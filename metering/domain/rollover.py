"""The period reset and its rollover: at ``period_end`` the period's plan grant expires, grants
due expire, the terms are resolved again, unused plan credits roll over up to the plan's cap
(a ``rollover:<boundary>`` grant that lives one period), and the new period's plan grant opens.
docs/engine.md has the rule.
"""

from __future__ import annotations

from metering.domain.config import EngineConfig
from metering.domain.entries import PERIOD, add_grant, emit, remove_grant, time_cause
from metering.domain.expiry import expire
from metering.domain.grants import Grant
from metering.domain.periods import next_anchor_after
from metering.domain.plans import PlanCatalog, resolve_terms
from metering.domain.records import EntryType, LedgerEntry
from metering.domain.state import AccountState
from metering.domain.terms import current_plan, plan_grant


def reset(
    config: EngineConfig,
    plans: PlanCatalog,
    state: AccountState,
    recorded_at: int,
    entries: list[LedgerEntry],
) -> None:
    """Close the period at ``period_end``: expire its plan grant, roll over, grant anew."""
    boundary = state.period_end
    cause = time_cause(state.account_id, PERIOD, boundary)
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
