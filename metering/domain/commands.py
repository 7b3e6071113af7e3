"""The credit commands: grants and purchases, adjustments, voids, plans, overrides, top-ups.

:func:`validate_command` refuses what no account could apply (the command is dead-lettered);
:func:`apply_rule` applies one command to its account, answering a business refusal (recorded
as COMMAND_REJECTED by the engine) rather than raising. Idempotency by ``command_id`` is the
engine's (``CreditEngine.apply_command``).
"""

from __future__ import annotations

from typing import NamedTuple

from metering.domain.config import EngineConfig
from metering.domain.corrections import amend_usage, void_usage
from metering.domain.entries import add_grant, emit, remove_grant
from metering.domain.errors import (
    DuplicateGrant,
    InsufficientBalance,
    Rejection,
    TopupNotAllowed,
    UnknownGrant,
    UnknownPlan,
    ValidationError,
)
from metering.domain.grants import SOURCES, Grant, burn, drawable
from metering.domain.plans import PlanCatalog
from metering.domain.plans import validate_override as _validate_override
from metering.domain.pricing import PriceBook
from metering.domain.records import CommandKind, CreditCommand, EntryType, LedgerEntry
from metering.domain.state import AccountState
from metering.domain.terms import current_plan, set_terms

_GRANT_KINDS = {
    CommandKind.GRANT: None,
    CommandKind.PURCHASE: "purchase",
    CommandKind.PROMOTION: "promotion",
}


class CommandStep(NamedTuple):
    """One command being applied: the rules, the account, the command and where entries go.
    (A tuple: one is built per command, and corrections come at a share of the usage rate.)"""

    config: EngineConfig
    plans: PlanCatalog
    prices: PriceBook
    state: AccountState
    cmd: CreditCommand
    recorded_at: int
    entries: list[LedgerEntry]

    def unpack(self) -> tuple[AccountState, CreditCommand, int, int, list[LedgerEntry]]:
        return self.state, self.cmd, self.cmd.issued_at, self.recorded_at, self.entries


def validate_command(cmd: CreditCommand) -> None:
    """Raise :class:`ValidationError` for a command no account could apply (it is dead-lettered)."""
    kind = cmd.kind
    if kind in _GRANT_KINDS:
        if cmd.amount is None or cmd.amount <= 0:
            raise ValidationError(f"{kind.value} needs a positive amount")
        source = _GRANT_KINDS[kind] or cmd.grant_source or "adjustment"
        if source not in SOURCES or source == "rollover":
            raise ValidationError(f"bad grant_source {source!r}")
        effective = cmd.issued_at if cmd.effective_at is None else cmd.effective_at
        if cmd.expires_at is not None and cmd.expires_at <= effective:
            raise ValidationError("expires_at must be after effective_at")
    elif kind is CommandKind.ADJUSTMENT:
        if not cmd.amount:
            raise ValidationError("adjustment needs a non-zero amount")
    elif kind is CommandKind.VOID_GRANT:
        if not cmd.grant_id:
            raise ValidationError("void_grant needs grant_id")
    elif kind is CommandKind.VOID_USAGE:
        if not cmd.event_id:
            raise ValidationError("void_usage needs event_id")
    elif kind is CommandKind.AMEND_USAGE:
        if not cmd.event_id:
            raise ValidationError("amend_usage needs event_id")
        _validate_units(cmd.units)
    elif kind is CommandKind.ASSIGN_PLAN:
        if not cmd.plan_id:
            raise ValidationError("assign_plan needs plan_id")
    elif kind is CommandKind.SET_OVERRIDE:
        if cmd.override is None:
            raise ValidationError("set_override needs override")
        _validate_override(cmd.override)
    elif kind is CommandKind.CONFIGURE_AUTO_TOPUP:
        cfg = cmd.auto_topup
        if cfg is None:
            raise ValidationError("configure_auto_topup needs auto_topup")
        if cfg.enabled and (cfg.amount <= 0 or cfg.threshold < 0 or cfg.max_requests < 1):
            raise ValidationError("auto_topup needs amount > 0, threshold >= 0, max >= 1")


MAX_UNITS = 16
"""Units one amend may name: as many as a usage event may carry (the SDK's limit)."""


def _validate_units(units: object) -> None:
    if not isinstance(units, dict) or not units:
        raise ValidationError("amend_usage needs units: a map of unit name to quantity")
    if len(units) > MAX_UNITS:
        raise ValidationError(f"amend_usage names {len(units)} units; at most {MAX_UNITS}")
    for unit, quantity in units.items():
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
            raise ValidationError(f"unit {unit!r} needs a whole quantity >= 0, got {quantity!r}")


def apply_rule(step: CommandStep) -> Rejection | None:
    """Apply ``step.cmd`` to its account: a business refusal comes back, never raised."""
    state, cmd, at, recorded_at, entries = step.unpack()
    kind = cmd.kind
    if kind in _GRANT_KINDS:
        return _grant(step)
    if kind is CommandKind.ADJUSTMENT:
        return _adjust(step)
    if kind is CommandKind.VOID_GRANT:
        return _void(step)
    if kind is CommandKind.VOID_USAGE:
        return void_usage(step)
    if kind is CommandKind.AMEND_USAGE:
        return amend_usage(step)
    if kind is CommandKind.ASSIGN_PLAN:
        plan = step.plans.get(cmd.plan_id or "")
        if plan is None:
            return UnknownPlan(f"plan {cmd.plan_id!r} is not in the catalog")
        set_terms(
            step.config,
            state,
            plan,
            state.override,
            EntryType.PLAN_ASSIGNED,
            cmd.command_id,
            at,
            recorded_at,
            entries,
        )
        return None
    if kind is CommandKind.SET_OVERRIDE:
        plan = current_plan(step.plans, state)
        set_terms(
            step.config,
            state,
            plan,
            cmd.override,
            EntryType.OVERRIDE_SET,
            cmd.command_id,
            at,
            recorded_at,
            entries,
        )
        return None
    if kind is CommandKind.CONFIGURE_AUTO_TOPUP:
        cfg = cmd.auto_topup
        state.topup = cfg if cfg is not None and cfg.enabled else None
        return None
    if kind is CommandKind.TOPUP_DECLINED:
        state.topup_pending_since = None
        backoff = step.config.topup_backoff_ms << min(state.topup_declines, 6)
        state.topup_backoff_until = at + backoff
        state.topup_declines += 1
        return None
    raise ValidationError(f"unknown command kind {kind!r}")  # pragma: no cover


def _grant(step: CommandStep) -> Rejection | None:
    state, cmd, at, recorded_at, entries = step.unpack()
    source = _GRANT_KINDS[cmd.kind] or cmd.grant_source or "adjustment"
    if source == "purchase" and not state.terms.topups_allowed:
        return TopupNotAllowed(f"plan {state.terms.plan_id} does not allow buying credits")
    grant_id = cmd.grant_id or cmd.command_id
    if state.grant(grant_id) is not None:
        return DuplicateGrant(f"grant {grant_id} already exists")
    amount = cmd.amount or 0
    grant = Grant(
        grant_id,
        source,
        amount,
        step.config.priorities[source] if cmd.priority is None else cmd.priority,
        at if cmd.effective_at is None else cmd.effective_at,
        cmd.expires_at,
        cmd.cost_basis_micros if source == "purchase" else None,
    )
    add_grant(
        step.config,
        state,
        grant,
        EntryType.GRANT_CREATED,
        cmd.command_id,
        at,
        recorded_at,
        entries,
        reason=cmd.reason,
    )
    if source == "purchase":
        state.topup_pending_since = None
        state.topup_declines = 0
    return None


def _adjust(step: CommandStep) -> Rejection | None:
    state, cmd, at, recorded_at, entries = step.unpack()
    amount = cmd.amount or 0
    if amount > 0:
        grant_id = cmd.grant_id or cmd.command_id
        if state.grant(grant_id) is not None:
            return DuplicateGrant(f"grant {grant_id} already exists")
        priority = step.config.priorities["adjustment"] if cmd.priority is None else cmd.priority
        grant = Grant(grant_id, "adjustment", amount, priority, at, cmd.expires_at)
        add_grant(
            step.config,
            state,
            grant,
            EntryType.ADJUSTMENT,
            cmd.command_id,
            at,
            recorded_at,
            entries,
            reason=cmd.reason,
        )
        return None
    need = -amount
    available = drawable(state.grants, state.clock)
    if need > available:
        return InsufficientBalance(f"cannot remove {need} from {available} credits in effect")
    allocations, _ = burn(state.grants, need, state.clock)
    state.balance += amount
    emit(
        state,
        entries,
        EntryType.ADJUSTMENT,
        amount,
        tuple(allocations),
        cmd.command_id,
        at,
        recorded_at,
        reason=cmd.reason,
    )
    return None


def _void(step: CommandStep) -> Rejection | None:
    state, cmd, at, recorded_at, entries = step.unpack()
    grant = state.grant(cmd.grant_id or "")
    if grant is None:
        return UnknownGrant(f"no live grant {cmd.grant_id!r}")
    if grant.grant_id == state.plan_grant_id:
        state.plan_carry += grant.amount  # a voided plan grant counts as fully used
        state.plan_grant_id = None
    remove_grant(
        state,
        grant,
        EntryType.GRANT_VOIDED,
        cmd.command_id,
        at,
        recorded_at,
        entries,
        reason=cmd.reason,
    )
    return None
