"""Time: what event time alone does to an account (first touch, grant expiry, expiring
notices, the period reset with its rollover), in time order.

The engine calls :func:`arrive` for every input (the first opens the account's period with
:func:`start`) and :func:`advance` whenever an account's clock passes its next wake-up (inputs,
commands, sweeps). A grant's expiry is
``expiry.expire``; closing a period (plan grant out, rollover in, the new plan grant) is
``rollover.reset``. No wall clock: ``now`` is always event time.
"""

from __future__ import annotations

from metering.domain.config import EngineConfig
from metering.domain.entries import DEFAULT_PLAN, EXPIRY, refresh_grants, time_cause
from metering.domain.errors import InvalidAccountId
from metering.domain.expiry import expire
from metering.domain.grants import Grant
from metering.domain.identifiers import identifier_problem
from metering.domain.periods import period_bounds
from metering.domain.plans import PlanCatalog
from metering.domain.records import AlertKind, CreditAlert, EntryType, LedgerEntry
from metering.domain.rollover import reset
from metering.domain.state import AccountState
from metering.domain.terms import set_terms


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
        cause = time_cause(state.account_id, DEFAULT_PLAN)
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


def arrive(
    config: EngineConfig,
    plans: PlanCatalog,
    state: AccountState,
    at: int,
    recorded_at: int,
    entries: list[LedgerEntry],
    alerts: list[CreditAlert],
) -> None:
    """An input (usage or command) at event time ``at``: the account's first input opens its
    period; a later one moves the clock forward, and what time does up to ``at`` happens
    before the input itself."""
    if not state.period_end:
        start(config, plans, state, at, recorded_at, entries)
    if at > state.clock:
        state.clock = at
        if at >= state.next_wakeup:
            advance(config, plans, state, at, recorded_at, entries, alerts)


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
                    time_cause(state.account_id, EXPIRY, g.grant_id),
                    now,
                    state.period_start,
                    state.period_end,
                    grant_id=g.grant_id,
                    amount=g.remaining,
                    message=f"{g.remaining} micro-credits expire at {g.expires_at}",
                )
            )
    refresh_grants(config, state)
