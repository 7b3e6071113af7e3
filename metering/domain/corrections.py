"""Corrections of charged usage: ``void_usage`` gives an event's charge back.

The charge comes from the account's charge memory (:mod:`metering.domain.charges`), so an event
can be corrected for as long as its id is remembered (the idempotency window). The reversal rule
is :mod:`metering.domain.reversal`. The event's id stays remembered: a re-send of the original
event is still a duplicate, and a voided event stays voided.

The ledger gets one ``USAGE_REVERSED`` entry: ``amount`` is the credits given back (debit and
overage), ``allocations`` the debit's parts per grant (with the correction grant's, which the
entry opens), ``overage_after`` lower by the overage of the current period. It carries the
original event's time, period, subject, feature and model, so history tables net it into the
event's own day; its id ends with the event id (``{command}:USAGE_REVERSED:{event}``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metering.domain.entries import emit, refresh_grants
from metering.domain.errors import AlreadyVoided, Rejection, UnknownEvent
from metering.domain.records import Allocation, EntryType
from metering.domain.reversal import CORRECTION_SOURCE, reverse

if TYPE_CHECKING:
    from metering.domain.commands import CommandStep

CORRECTION_PRIORITY = 25
"""When the engine's priorities name none for ``correction``."""


def void_usage(step: CommandStep) -> Rejection | None:
    state, cmd, _, recorded_at, entries = step.unpack()
    event_id = cmd.event_id or ""
    record = state.charges.get(event_id)
    if record is None:
        days = step.config.dedupe_window_ms // 86_400_000
        return UnknownEvent(f"no charge of event {event_id!r} in the last {days} days")
    if record.voided:
        return AlreadyVoided(f"event {event_id!r} is already voided")
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
    state.charges.void(event_id, state.clock)
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
    # The entry belongs to the event's own period and usage row, not the current ones.
    entries[-1] = entries[-1]._replace(
        period_start=charge.period_start,
        period_end=record.period_end,
        subject=record.subject,
        feature=record.feature,
        model=record.model,
    )
    refresh_grants(step.config, state)
    return None
