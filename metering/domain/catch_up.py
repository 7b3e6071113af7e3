"""Bring an account's state up to its ledger: the processor's state is a cache of the ledger.

When a restored state disagrees with the ledger (or is missing), the processor rebuilds it from
a snapshot (the newest committed state it can find, or a new state) plus the ledger entries the
snapshot has not seen (design invariant 6). :func:`catch_up` applies those entries.

What the ledger carries is restored exactly: ``seq``, balance, overage, every live grant (its
full description comes with the entry that opened it, its remaining with every allocation), the
period, the plan and its published terms (monthly credits, overage policy and limit), the plan
grant, this period's usage (so thresholds already crossed stay announced), the ids of the
commands that wrote entries, and the usage event ids and correction command ids to remember
again (returned, the caller owns the id store).

What the ledger does not carry keeps the snapshot's value (a new state's default when there is
no snapshot): the auto top-up configuration and its pending request, an override's trial
features, the plan credits of a plan grant replaced mid-period (``plan_carry``), and the ids of
commands and events that wrote no entry. docs/processor.md lists what that means for an account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from metering.domain.charges import ChargeRecord
from metering.domain.config import EngineConfig
from metering.domain.corrections import AMENDED
from metering.domain.entries import entry_suffix, is_time_cause, refresh_grants
from metering.domain.errors import LedgerError, OutsideDedupeWindow
from metering.domain.fold import fold
from metering.domain.grants import Grant
from metering.domain.periods import period_bounds
from metering.domain.plans import NO_PLAN, NO_PLAN_TERMS_PLAN, PlanCatalog, Terms, resolve_terms
from metering.domain.records import AccountOverride, AccountTerms, EntryType, LedgerEntry
from metering.domain.reversal import Charge
from metering.domain.state import AccountState, command_key

USAGE_ENTRY_TYPES = frozenset({EntryType.USAGE_DEBIT, EntryType.OVERAGE, EntryType.USAGE_REJECTED})
"""Entries that charged (or turned away) a usage event: their event id is remembered, unless
the event was outside the dedupe window (:func:`remembers_event`)."""


def remembers_event(entry_type: str, reason: str | None) -> bool:
    """Does an entry of ``entry_type`` with ``reason`` leave its cause (a usage event) in the
    id store? The one rule the rebuild (``catch_up``) and the restore check both apply."""
    return entry_type in USAGE_ENTRY_TYPES and reason != OutsideDedupeWindow.code


_CLOSING = frozenset({EntryType.GRANT_EXPIRED, EntryType.GRANT_VOIDED})


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """What :func:`catch_up` did: the entries applied and the usage event ids to remember."""

    applied: int
    event_ids: list[tuple[str, int]]
    """(event id, remembered-at account time) of the usage entries applied, in ledger order."""
    voided: list[tuple[str, int]] = field(default_factory=list)
    """(event id, account time) of the usage events the entries voided."""
    amended: list[tuple[str, int]] = field(default_factory=list)
    """(event id, account time) of the usage events the entries amended (their charge now is
    the amend's)."""
    corrections: list[tuple[str, int]] = field(default_factory=list)
    """(command id, account time) of the corrections that reversed a charge: remembered by the
    charge memory (``ChargeMemory.remember_correction``), not in ``state.commands``."""


def catch_up(
    state: AccountState,
    entries: Sequence[LedgerEntry],
    config: EngineConfig,
    plans: PlanCatalog,
) -> CaughtUp:
    """Apply the ledger ``entries`` that follow ``state`` (``seq`` order, from ``state.seq + 1``).

    Raises :class:`LedgerError`, with ``state`` untouched, when the entries do not continue the
    state or break the ledger's own invariants (a ``seq`` gap, a broken balance chain).
    """
    entries = [e for e in entries if e.seq > state.seq]
    if not entries:
        return CaughtUp(0, [])
    for e in entries:
        if e.account_id != state.account_id:
            raise LedgerError(f"{e.entry_id}: entry of {e.account_id}, not {state.account_id}")
    fold(entries, start=state.view())  # raises on a gap, a broken chain or a grant overdrawn
    remembered: list[tuple[str, int]] = []
    voided: dict[str, int] = {}
    amended: dict[str, int] = {}
    corrections: dict[str, int] = {}
    for e in entries:
        _apply(state, e, plans)
        if remembers_event(e.type, e.reason):
            remembered.append((e.cause_id, state.clock))
            if e.reason == AMENDED:
                voided.pop(e.cause_id, None)  # reversed, then charged again
                amended[e.cause_id] = state.clock
        elif e.type is EntryType.USAGE_REVERSED:  # its cause is a correction: see CaughtUp
            corrections[e.cause_id] = state.clock
            event_id = entry_suffix(e)
            voided[event_id] = state.clock
            amended.pop(event_id, None)
        elif not is_time_cause(state.account_id, e.cause_id) and e.type not in USAGE_ENTRY_TYPES:
            state.commands.add(command_key(e.cause_id))
    for grant in state.grants:
        if grant.expires_at is not None and state.clock >= grant.expires_at - (
            config.expiring_notice_ms
        ):
            grant.warned = True  # its notice was due: assume it went out, never send it twice
    refresh_grants(config, state)
    return CaughtUp(
        len(entries),
        remembered,
        list(voided.items()),
        list(amended.items()),
        list(corrections.items()),
    )


def _apply(state: AccountState, e: LedgerEntry, plans: PlanCatalog) -> None:
    state.seq = e.seq
    state.balance = e.balance_after
    state.overage = e.overage_after
    if e.occurred_at > state.clock:
        state.clock = e.occurred_at
    if e.period_end > state.period_end:  # a later period (late entries carry an earlier one)
        if state.period_end:
            state.prev_period_start = state.period_start
        else:
            state.prev_period_start = period_bounds(e.period_start - 1, state.terms.anchor_day)[0]
        state.period_start, state.period_end = e.period_start, e.period_end
        state.period_used = 0
        state.plan_carry = 0
        state.alerted = 0
    if e.terms is not None:
        _set_terms(state, e, plans)
        if state.period_end and e.type is not EntryType.PERIOD_RESET:
            anchor = state.terms.anchor_day
            state.prev_period_start = period_bounds(state.period_start - 1, anchor)[0]
    if e.grant is not None:
        info = e.grant
        grant = Grant.from_info(info)
        state.grants.append(grant)
        if info.source == "plan" and info.grant_id.startswith("plan:"):  # terms.plan_grant
            state.plan_grant_id = info.grant_id
    for grant_id, amount in e.allocations:
        live = state.grant(grant_id)
        if live is None and amount > 0 and grant_id in state.spent:  # refilled by a reversal
            live = state.spent.pop(grant_id)
            state.grants.append(live)
        if live is not None:
            live.remaining += amount
    if e.type in _CLOSING:
        grant_id = entry_suffix(e)
        closed = state.grant(grant_id)
        if closed is not None:
            state.grants.remove(closed)
        if grant_id == state.plan_grant_id:
            if e.type is EntryType.GRANT_VOIDED and closed is not None:
                state.plan_carry += closed.amount  # a voided plan grant counts as fully used
            state.plan_grant_id = None
    if e.type in (EntryType.USAGE_DEBIT, EntryType.OVERAGE):
        state.period_used -= e.amount  # late usage too, as the engine counts it
        remember_charge(state, e)
    elif e.type is EntryType.USAGE_REVERSED:
        if e.period_start == state.period_start:
            state.period_used = max(state.period_used - e.amount, 0)
        state.charges.void(entry_suffix(e), state.clock)
    amounts = state.terms.threshold_amounts()  # checked after every input: alerts.threshold_alerts
    while state.alerted < len(amounts) and state.period_used >= amounts[state.alerted]:
        state.alerted += 1


def _set_terms(state: AccountState, e: LedgerEntry, plans: PlanCatalog) -> None:
    """New published terms (PLAN_ASSIGNED, OVERRIDE_SET, PERIOD_RESET), as terms.set_terms and
    timeline.advance apply them."""
    assert e.terms is not None
    old = state.terms
    # Thresholds announced this period stay announced under the new terms.
    top = max(old.alert_thresholds[: state.alerted], default=0)
    state.terms, state.override = _terms(e.terms, plans)
    state.alerted = sum(1 for pct in state.terms.alert_thresholds if pct <= top)
    if e.type is EntryType.PERIOD_RESET:
        return
    first = old.plan_id == NO_PLAN and state.terms.plan_id != NO_PLAN
    if first or state.terms.monthly_credits != old.monthly_credits:
        # The period's plan grant is replaced: what it used counts against the new one. A spent
        # one leaves with no entry (nothing to expire), so it is closed here.
        plan_grant = state.grant(state.plan_grant_id) if state.plan_grant_id else None
        if plan_grant is not None:
            state.plan_carry += plan_grant.amount - plan_grant.remaining
            if not plan_grant.remaining:
                state.grants.remove(plan_grant)
        if plan_grant is None or not plan_grant.remaining:
            state.plan_grant_id = None


def _terms(published: AccountTerms, plans: PlanCatalog) -> tuple[Terms, AccountOverride | None]:
    """The account's terms from the published ones: the plan's rules from the catalog, and an
    override for what differs from the plan (an override's trial is not published)."""
    plan = plans.get(published.plan_id)
    if plan is None:
        base = resolve_terms(NO_PLAN_TERMS_PLAN, None)
        features = None if published.features is None else frozenset(published.features)
        return Terms(
            plan_id=published.plan_id,
            monthly_credits=published.monthly_credits,
            anchor_day=base.anchor_day,
            rollover_cap=base.rollover_cap,
            overage_policy=published.overage_policy,
            overage_limit=published.overage_limit,
            topups_allowed=base.topups_allowed,
            alert_thresholds=base.alert_thresholds,
            features=features,
        ), None
    override = AccountOverride(
        monthly_credits=(
            None if published.monthly_credits == plan.monthly_credits else published.monthly_credits
        ),
        overage_policy=(
            None if published.overage_policy == plan.overage_policy else published.overage_policy
        ),
        overage_limit=(
            None if published.overage_limit == plan.overage_limit else published.overage_limit
        ),
    )
    if override == AccountOverride():
        return resolve_terms(plan, None), None
    return resolve_terms(plan, override), override


def remember_charge(state: AccountState, e: LedgerEntry) -> None:
    """The charge memory as the engine left it after this USAGE_DEBIT or OVERAGE entry."""
    record = state.charges.get(e.cause_id)
    if record is not None and not record.voided:
        charge = record.charge
        if e.type is EntryType.USAGE_DEBIT:
            charge = charge._replace(allocations=charge.allocations + e.allocations)
        else:
            charge = charge._replace(overage=charge.overage - e.amount)
        state.charges.put(record._replace(charge=charge))
        return
    debit = e.type is EntryType.USAGE_DEBIT
    charge = Charge(
        e.cause_id, e.occurred_at, e.period_start, e.allocations if debit else (),
        0 if debit else -e.amount,
    )  # fmt: skip
    state.charges.put(
        ChargeRecord(charge, e.period_end, e.feature or "", e.subject, e.model, state.clock)
    )
