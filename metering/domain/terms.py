"""Terms: which plan (and override) an account is on, and the plan grant that comes with it.

``set_terms`` is assign_plan / set_override (the mid-period rule is in docs/engine.md);
``plan_grant`` opens a period's plan credits; ``current_plan`` reads the catalog, falling back to
the account's own snapshot when its plan has left the catalog.
"""

from __future__ import annotations

from metering.domain.config import EngineConfig
from metering.domain.entries import add_grant, emit, remove_grant
from metering.domain.grants import Grant
from metering.domain.periods import period_bounds
from metering.domain.plans import NO_PLAN, Plan, PlanCatalog, resolve_terms
from metering.domain.records import AccountOverride, EntryType, LedgerEntry
from metering.domain.state import AccountState


def current_plan(plans: PlanCatalog, state: AccountState) -> Plan:
    """The account's plan in the catalog, or a snapshot of its terms if the plan left it."""
    plan = plans.get(state.terms.plan_id)
    if plan is not None:
        return plan
    t = state.terms  # the plan left the catalog: keep the account's snapshot
    return Plan(
        t.plan_id,
        t.monthly_credits,
        t.anchor_day,
        t.rollover_cap,
        None,
        t.overage_policy,
        t.overage_limit,
        t.topups_allowed,
        t.alert_thresholds,
        t.features,
    )


def set_terms(
    config: EngineConfig,
    state: AccountState,
    plan: Plan,
    override: AccountOverride | None,
    entry_type: EntryType,
    cause: str,
    at: int,
    recorded_at: int,
    entries: list[LedgerEntry],
) -> None:
    """assign_plan / set_override. The mid-period rule is documented in docs/engine.md."""
    first = state.terms.plan_id == NO_PLAN and plan.plan_id != NO_PLAN
    old_monthly = state.terms.monthly_credits
    # Thresholds already announced this period stay announced under the new terms:
    # "once per threshold per period" holds across a mid-period plan change.
    announced = state.terms.alert_thresholds[: state.alerted]
    top = max(announced, default=0)
    state.override = override
    state.terms = terms = resolve_terms(plan, override)
    state.alerted = sum(1 for pct in terms.alert_thresholds if pct <= top)
    if first:  # the first real plan anchors the account's periods
        state.period_start, state.period_end = period_bounds(at, terms.anchor_day)
        state.prev_period_start = period_bounds(state.period_start - 1, terms.anchor_day)[0]
    emit(state, entries, entry_type, 0, (), cause, at, recorded_at, terms=terms.published())
    if not first and terms.monthly_credits == old_monthly:
        return
    used = state.plan_carry
    old = state.grant(state.plan_grant_id) if state.plan_grant_id else None
    if old is not None:
        used += old.amount - old.remaining
        remove_grant(
            state,
            old,
            EntryType.GRANT_EXPIRED,
            cause,
            at,
            recorded_at,
            entries,
            reason="plan_change",
        )
    state.plan_carry = used
    state.plan_grant_id = None
    amount = terms.monthly_credits if first else max(terms.monthly_credits - used, 0)
    if amount:
        plan_grant(config, state, f"plan:{cause}", amount, at, cause, recorded_at, entries)


def plan_grant(
    config: EngineConfig,
    state: AccountState,
    grant_id: str,
    amount: int,
    at: int,
    cause: str,
    recorded_at: int,
    entries: list[LedgerEntry],
) -> None:
    """Open the period's plan grant (it expires with the period)."""
    grant = Grant(grant_id, "plan", amount, config.priorities["plan"], at, state.period_end)
    state.plan_grant_id = grant_id
    add_grant(config, state, grant, EntryType.GRANT_CREATED, cause, at, recorded_at, entries)
