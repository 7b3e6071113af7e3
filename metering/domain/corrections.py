"""Corrections of charged usage: ``void_usage`` gives an event's charge back, ``amend_usage``
gives it back and charges the event again for its corrected units.

The charge comes from the account's charge memory (:mod:`metering.domain.charges`), so an event
can be corrected for as long as its id is remembered (the idempotency window). The reversal rule
is :mod:`metering.domain.reversal`. The event's id stays remembered: a re-send of the original
event is still a duplicate, and a voided event stays voided. The correction's own command id is
remembered for good by the charge memory (the processor's id store), not in the account state,
which would grow with every correction (``CreditEngine.apply_command``).

The ledger gets one ``USAGE_REVERSED`` entry: ``amount`` is the credits given back (debit and
overage), ``allocations`` the debit's parts per grant (with the correction grant's, which the
entry opens), ``overage_after`` lower by the overage of the current period. It carries the
original event's time, period, subject, feature and model, so history tables net it into the
event's own day; its id ends with the event id (``{command}:USAGE_REVERSED:{event}``).

An amend follows it with the new charge: a ``USAGE_DEBIT`` and/or ``OVERAGE`` priced by the
price version of the event's own ``occurred_at``, drawn in burn order from the grants live now
(the reversal's included), with ``cause_id`` = the event id and ``reason`` = ``amended``. Its
ids are ``{command}:USAGE_DEBIT:{event}`` and ``{command}:OVERAGE:{event}``. Its overage counts
in the current overage, as late usage does, while the reversal credits the event's own period.
An amend is all or nothing: when grants and the overage the terms allow cannot pay the new
charge, it is rejected (``insufficient_balance``) and nothing changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metering.domain.charges import ChargeRecord
from metering.domain.entries import refresh_grants
from metering.domain.errors import (
    AlreadyVoided,
    InsufficientBalance,
    NotPriced,
    PricingError,
    Rejection,
    UnknownEvent,
)
from metering.domain.grants import burn, drawable
from metering.domain.plans import ALLOW, UNLIMITED
from metering.domain.records import Allocation, EntryType, GrantInfo, LedgerEntry
from metering.domain.reversal import CORRECTION_SOURCE, Charge, reverse

if TYPE_CHECKING:
    from metering.domain.commands import CommandStep
    from metering.domain.state import AccountState

CORRECTION_PRIORITY = 25
"""When the engine's priorities name none for ``correction``."""

AMENDED = "amended"
"""The ``reason`` of an amend's new usage entries."""

_new = tuple.__new__


def void_usage(step: CommandStep) -> Rejection | None:
    record = _charge_of(step)
    if isinstance(record, Rejection):
        return record
    _reverse(step, record)
    step.state.charges.void(record.charge.event_id, step.state.clock)
    return None  # the engine re-sorts the grants after every command


def amend_usage(step: CommandStep) -> Rejection | None:
    record = _charge_of(step)
    if isinstance(record, Rejection):
        return record
    state, cmd = step.state, step.cmd
    charge = record.charge
    try:
        micros, version = step.prices.price(
            record.feature, record.model, cmd.units or {}, charge.occurred_at
        )
    except PricingError as exc:
        return NotPriced(str(exc))
    # All or nothing: what the account could pay once the old charge is given back.
    same_period = charge.period_start == state.period_start
    overage = state.overage - (charge.overage if same_period else 0)
    payable = drawable(state.grants, state.clock) + charge.debit + _headroom(state, overage)
    if micros > payable:
        return InsufficientBalance(
            f"amending {charge.event_id!r} costs {micros} micro-credits; {payable} can be paid"
        )
    grants = len(state.grants)
    _reverse(step, record)
    if len(state.grants) != grants:  # a used-up grant refilled, or the correction grant: sort
        refresh_grants(step.config, state)
    allocations, need = burn(state.grants, micros, state.clock) if micros else ([], 0)
    drawn = tuple(allocations)
    covered = micros - need
    over = need
    state.period_used += micros
    if covered or not micros:
        state.balance -= covered
        _event_entry(step, record, EntryType.USAGE_DEBIT, -covered, drawn, AMENDED, version)
    if over:  # counted now, as late usage is, whatever the event's period
        state.overage += over
        _event_entry(step, record, EntryType.OVERAGE, -over, (), AMENDED, version)
    amended = Charge(charge.event_id, charge.occurred_at, charge.period_start, drawn, over)
    state.charges.put(
        ChargeRecord(
            amended, record.period_end, record.feature, record.subject, record.model, state.clock
        )
    )
    return None


def _headroom(state: AccountState, overage: int) -> int:
    """The overage the account's terms still allow, with ``overage`` already used."""
    policy = state.terms.overage_policy
    if policy == UNLIMITED:
        return 1 << 62
    if policy == ALLOW:
        return max(state.terms.overage_limit - overage, 0)
    return 0


def _charge_of(step: CommandStep) -> ChargeRecord | Rejection:
    """The remembered charge the command corrects, or why there is none to correct."""
    event_id = step.cmd.event_id or ""
    record = step.state.charges.get(event_id)
    if record is None:
        days = step.config.dedupe_window_ms // 86_400_000
        return UnknownEvent(f"no charge of event {event_id!r} in the last {days} days")
    if record.voided:
        return AlreadyVoided(f"event {event_id!r} is already voided")
    return record


def _reverse(step: CommandStep, record: ChargeRecord) -> None:
    """Give ``record``'s charge back and write its ``USAGE_REVERSED`` entry (the caller says
    what the charge memory keeps: the void, or the amended charge)."""
    state = step.state
    charge = record.charge
    reversal = reverse(
        charge,
        state.grants,
        at=state.clock,
        period_start=state.period_start,
        period_end=state.period_end,
        priority=step.config.priorities.get(CORRECTION_SOURCE, CORRECTION_PRIORITY),
        spent=state.spent,
    )
    allocations = reversal.returned
    correction = reversal.correction
    if correction is not None:
        state.grants.append(correction)
        allocations += (Allocation(correction.grant_id, correction.amount),)
    total = reversal.total
    given_back = total + reversal.overage_reversed
    state.balance += total
    state.overage -= reversal.overage_now
    if charge.period_start == state.period_start:
        state.period_used = max(state.period_used - given_back, 0)
    _event_entry(
        step,
        record,
        EntryType.USAGE_REVERSED,
        given_back,
        allocations,
        step.cmd.reason,
        grant=None if correction is None else correction.info(),
    )


def _event_entry(
    step: CommandStep,
    record: ChargeRecord,
    entry_type: EntryType,
    amount: int,
    allocations: tuple[Allocation, ...],
    reason: str | None,
    price_version: str | None = None,
    grant: GrantInfo | None = None,
) -> None:
    """The account's next entry, ``{command}:{type}:{event}``, in the event's own period and
    usage row (its time, period, subject, feature and model), with the balances as they are
    now. An amend's new charge (``price_version`` given) is caused by the event; the reversal
    by the command."""
    state = step.state
    charge = record.charge
    event_id = charge.event_id
    command_id = step.cmd.command_id
    state.seq += 1
    # tuple.__new__ skips NamedTuple's Python-level __new__ (corrections are a hot path too).
    step.entries.append(
        _new(
            LedgerEntry,
            (
                f"{command_id}:{entry_type.value}:{event_id}",
                state.account_id,
                state.seq,
                entry_type,
                amount,
                allocations,
                state.balance,
                state.overage,
                command_id if price_version is None else event_id,
                charge.occurred_at,
                step.recorded_at,
                charge.period_start,
                record.period_end,
                record.subject,
                record.feature,
                record.model,
                price_version,
                reason,
                None,
                grant,
                None,
            ),
        )
    )
