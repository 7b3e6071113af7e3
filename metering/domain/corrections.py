"""Corrections of charged usage: ``void_usage`` gives an event's charge back, ``amend_usage``
gives it back and charges the event again for its corrected units.

The charge comes from the account's charge memory (:mod:`metering.domain.charges`), so an event
can be corrected for as long as its id is remembered (the idempotency window). The reversal rule
is :mod:`metering.domain.reversal`. The event's id stays remembered: a re-send of the original
event is still a duplicate, and a voided event stays voided.

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

from dataclasses import replace
from typing import TYPE_CHECKING

from metering.domain.charges import ChargeRecord
from metering.domain.entries import emit, refresh_grants
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
from metering.domain.records import Allocation, EntryType, LedgerEntry
from metering.domain.reversal import CORRECTION_SOURCE, reverse

if TYPE_CHECKING:
    from metering.domain.commands import CommandStep
    from metering.domain.state import AccountState

CORRECTION_PRIORITY = 25
"""When the engine's priorities name none for ``correction``."""

AMENDED = "amended"
"""The ``reason`` of an amend's new usage entries."""


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
    _reverse(step, record)
    refresh_grants(step.config, state)  # refilled grants and the correction grant in burn order
    allocations, need = burn(state.grants, micros, state.clock) if micros else ([], 0)
    covered = micros - need
    over = need
    state.period_used += micros
    if covered or not micros:
        state.balance -= covered
        _charge_entry(step, record, EntryType.USAGE_DEBIT, -covered, tuple(allocations), version)
    if over:  # counted now, as late usage is, whatever the event's period
        state.overage += over
        _charge_entry(step, record, EntryType.OVERAGE, -over, (), version)
    amended = replace(charge, allocations=tuple(allocations), overage=over)
    state.charges.put(replace(record, charge=amended, remembered_at=state.clock))
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
    state, cmd, _, recorded_at, entries = step.unpack()
    charge = record.charge
    event_id = charge.event_id
    reversal = reverse(
        charge,
        state.grants,
        at=state.clock,
        period_start=state.period_start,
        period_end=state.period_end,
        priority=step.config.priorities.get(CORRECTION_SOURCE, CORRECTION_PRIORITY),
        spent=state.spent,
    )
    allocations = list(reversal.returned)
    correction = reversal.correction
    if correction is not None:
        state.grants.append(correction)
        allocations.append(Allocation(correction.grant_id, correction.amount))
    given_back = reversal.total + reversal.overage_reversed
    state.balance += reversal.total
    state.overage -= reversal.overage_now
    if charge.period_start == state.period_start:
        state.period_used = max(state.period_used - given_back, 0)
    emit(
        state,
        entries,
        EntryType.USAGE_REVERSED,
        given_back,
        tuple(allocations),
        cmd.command_id,
        charge.occurred_at,
        recorded_at,
        suffix=event_id,
        reason=cmd.reason,
        grant=None if correction is None else correction.info(),
    )
    _in_event_row(entries, record)


def _charge_entry(
    step: CommandStep,
    record: ChargeRecord,
    entry_type: EntryType,
    amount: int,
    allocations: tuple[Allocation, ...],
    version: str,
) -> None:
    """An amend's new USAGE_DEBIT or OVERAGE: ``{command}:{type}:{event}``, caused by the
    event, priced at ``version``."""
    event_id = record.charge.event_id
    cmd = step.cmd
    emit(
        step.state, step.entries, entry_type, amount, allocations, cmd.command_id,
        record.charge.occurred_at, step.recorded_at, suffix=event_id, reason=AMENDED,
    )  # fmt: skip
    step.entries[-1] = step.entries[-1]._replace(cause_id=event_id, price_version=version)
    _in_event_row(step.entries, record)


def _in_event_row(entries: list[LedgerEntry], record: ChargeRecord) -> None:
    """The last entry belongs to the event's own period and usage row, not the current ones."""
    entries[-1] = entries[-1]._replace(
        period_start=record.charge.period_start,
        period_end=record.period_end,
        subject=record.subject,
        feature=record.feature,
        model=record.model,
    )
