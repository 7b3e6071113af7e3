"""The credit engine: usage and commands in, ledger entries and alerts out.

Pure and deterministic: no I/O, no wall clock. Every decision follows from the account state,
the input and its event time; ``recorded_at`` is passed in and only copied onto entries.

The engine **mutates the AccountState in place** and returns an :class:`Outcome` with what the
change emitted. Raised errors (``PricingError``, ``ValidationError``) leave the state untouched.
See docs/engine.md for the rules (burn order, periods, overage, late events, idempotency).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metering.domain.alerts import dead_letter_alert, exhausted_alert, maybe_topup, threshold_alerts
from metering.domain.charges import NO_CHARGES, ChargeParts
from metering.domain.commands import CommandStep, apply_rule, validate_command
from metering.domain.config import DEFAULT_CONFIG, EngineConfig
from metering.domain.entries import emit, refresh_grants
from metering.domain.errors import (
    DomainError,
    FeatureNotInPlan,
    OutsideDedupeWindow,
    Rejection,
    UsageBlocked,
    ValidationError,
)
from metering.domain.grants import burn
from metering.domain.plans import ALLOW, UNLIMITED, PlanCatalog
from metering.domain.pricing import PriceBook
from metering.domain.records import (
    Allocation,
    CommandKind,
    CreditAlert,
    CreditCommand,
    EntryType,
    LedgerEntry,
    UsageEvent,
)
from metering.domain.state import AccountState, command_key
from metering.domain.timeline import advance, arrive

_new = tuple.__new__
_DEBIT = EntryType.USAGE_DEBIT
_OVERAGE = EntryType.OVERAGE
_REJECTED = EntryType.USAGE_REJECTED
_CORRECTIONS = frozenset({CommandKind.VOID_USAGE, CommandKind.AMEND_USAGE})


@dataclass(slots=True)
class Outcome:
    """What one call emitted, in order. Publish ``entries`` then ``alerts``."""

    entries: list[LedgerEntry] = field(default_factory=list)
    alerts: list[CreditAlert] = field(default_factory=list)
    rejection: Rejection | None = None
    """Set when (part of) the input was refused; the refusal is also in ``entries``."""
    duplicate: bool = False
    """The id was already processed: nothing was emitted and nothing changed."""


class CreditEngine:
    """Prices usage and applies it and credit commands to account states."""

    __slots__ = ("config", "plans", "price_book")

    def __init__(
        self, price_book: PriceBook, plans: PlanCatalog, config: EngineConfig = DEFAULT_CONFIG
    ) -> None:
        if config.default_plan is not None and plans.get(config.default_plan) is None:
            raise ValidationError(f"default plan {config.default_plan!r} is not in the catalog")
        self.price_book = price_book
        self.plans = plans
        self.config = config

    def new_state(self, account_id: str) -> AccountState:
        return AccountState.new(account_id, self.config)

    def load_state(self, data: bytes) -> AccountState:
        return AccountState.from_bytes(data, self.config)

    def price(self, event: UsageEvent) -> tuple[int, str]:
        """(micro-credits, price version) of one event. Raises a ``PricingError``."""
        return self.price_book.price(event.feature, event.model, event.units, event.occurred_at)

    # == usage (the hot path) ======================================================================

    def apply_usage(self, state: AccountState, event: UsageEvent, recorded_at: int) -> Outcome:
        """Price ``event`` and charge it to ``state``.

        Grants pay in burn order; what they cannot cover becomes OVERAGE or USAGE_REJECTED per
        the overage policy. A duplicate ``event_id`` returns ``Outcome(duplicate=True)``.
        """
        event_id = event.event_id
        dedupe = state.dedupe
        if dedupe.seen(event_id):
            return Outcome(duplicate=True)
        if event.account_id != state.account_id:
            raise ValidationError(
                f"event {event_id} is for {event.account_id}, not {state.account_id}"
            )
        at = event.occurred_at
        micros, version = self.price_book.price(event.feature, event.model, event.units, at)

        entries: list[LedgerEntry] = []
        alerts: list[CreditAlert] = []
        arrive(self.config, self.plans, state, at, recorded_at, entries, alerts)
        clock = state.clock
        # Outside the window: an earlier copy may be forgotten already, so never charge it.
        horizon = clock - self.config.dedupe_window_ms
        stale = at < horizon or at <= dedupe.watermark
        dedupe.remember(event_id, clock)
        dedupe.expire(horizon)
        charges = state.charges
        charges.expire(horizon)

        # The period the usage belongs to (late events within the grace window: their own).
        period_start = state.period_start
        period_end = state.period_end
        reason = None
        if at < period_start:
            if at >= state.prev_period_start and clock < period_start + self.config.late_grace_ms:
                period_end = period_start
                period_start = state.prev_period_start
                reason = "late"
            else:
                reason = "late_after_grace"

        terms = state.terms
        rejection: Rejection | None = None
        need = micros
        if stale:
            rejection = OutsideDedupeWindow(f"event {event_id} is older than the dedupe window")
        elif terms.features is not None and not terms.allows(event.feature, at):
            rejection = FeatureNotInPlan(f"plan {terms.plan_id} lacks {event.feature}")
        else:
            allocations: list[Allocation] = []
            over = 0
            if need:
                allocations, need = burn(state.grants, need, clock)
            covered = micros - need
            if covered or not micros:
                before = state.balance
                state.balance = balance = before - covered
                state.seq += 1
                # tuple.__new__ skips NamedTuple's Python-level __new__ (hot path).
                entries.append(
                    _new(
                        LedgerEntry,
                        (
                            event_id + ":USAGE_DEBIT",
                            state.account_id,
                            state.seq,
                            _DEBIT,
                            -covered,
                            tuple(allocations),
                            balance,
                            state.overage,
                            event_id,
                            at,
                            recorded_at,
                            period_start,
                            period_end,
                            event.subject,
                            event.feature,
                            event.model,
                            version,
                            reason,
                            event.reservation_id,
                            None,
                            None,
                        ),
                    )
                )
                if before and not balance:
                    alerts.append(exhausted_alert(state, event_id, at))
            if need:
                policy = terms.overage_policy
                if policy == UNLIMITED:
                    over = need
                elif policy == ALLOW:
                    over = min(need, max(terms.overage_limit - state.overage, 0))
                if over:
                    state.overage += over
                    need -= over
                    self._usage_entry(
                        state,
                        entries,
                        _OVERAGE,
                        -over,
                        event,
                        recorded_at,
                        period_start,
                        period_end,
                        version,
                        reason,
                    )
                if need:
                    rejection = UsageBlocked(
                        f"{need} micro-credits of {event_id} exceed credits and overage"
                    )
            state.period_used += micros - need
            if state.period_used >= state.next_threshold:
                threshold_alerts(state, event_id, at, alerts)
            if charges is not NO_CHARGES and (covered or over or not micros):  # it was charged
                charges.charged(
                    _new(ChargeParts, (
                        event_id, at, period_start, period_end, allocations, over,
                        event.feature, event.subject, event.model, clock,
                    ))
                )  # fmt: skip

        if need or (rejection is not None and not micros):
            self._usage_entry(
                state,
                entries,
                _REJECTED,
                -need,
                event,
                recorded_at,
                period_start,
                period_end,
                version,
                rejection.code if rejection else None,
            )
        topup = state.topup
        if topup is not None and state.balance < topup.threshold:
            maybe_topup(state, event_id, clock, alerts, self.config.topup_pending_timeout_ms)
        return Outcome(entries, alerts, rejection)

    def _usage_entry(
        self,
        state: AccountState,
        entries: list[LedgerEntry],
        entry_type: EntryType,
        amount: int,
        event: UsageEvent,
        recorded_at: int,
        period_start: int,
        period_end: int,
        version: str,
        reason: str | None,
    ) -> None:
        """OVERAGE / USAGE_REJECTED: no grant changes. The first usage entry carries the hold."""
        state.seq += 1
        first = not entries or entries[-1].cause_id != event.event_id
        entry_id = f"{event.event_id}:{entry_type.value}"
        if reason == OutsideDedupeWindow.code:  # may recur for one event_id: keep ids unique
            entry_id = f"{entry_id}:{state.seq}"
        entries.append(
            LedgerEntry(
                entry_id,
                state.account_id,
                state.seq,
                entry_type,
                amount,
                (),
                state.balance,
                state.overage,
                event.event_id,
                event.occurred_at,
                recorded_at,
                period_start,
                period_end,
                event.subject,
                event.feature,
                event.model,
                version,
                reason,
                event.reservation_id if first else None,
            )
        )

    def dead_letter_alert(
        self, state: AccountState, event: UsageEvent, error: DomainError
    ) -> CreditAlert | None:
        """The alert owed for ``event`` when :meth:`apply_usage` raised ``error`` (see
        :func:`metering.domain.alerts.dead_letter_alert`)."""
        return dead_letter_alert(state, event, error)

    # == commands (the rules are in commands.py) ==================================================

    def apply_command(self, state: AccountState, cmd: CreditCommand, recorded_at: int) -> Outcome:
        """Apply a billing/admin command. Business refusals come back as ``rejection``."""
        key = command_key(cmd.command_id)
        if key in state.commands or key in state.window:  # window: states written before
            return Outcome(duplicate=True)
        correction = cmd.kind in _CORRECTIONS
        if correction and state.charges.corrected(cmd.command_id):
            return Outcome(duplicate=True)
        if cmd.account_id != state.account_id:
            raise ValidationError(f"command {cmd.command_id} is for another account")
        validate_command(cmd)
        if correction and state.charges is NO_CHARGES:
            raise ValidationError(
                f"{cmd.kind.value} needs the charges of recent usage, which this engine does not "
                "keep (EngineConfig.charge_window, or a charge store attached to the state)"
            )
        at = cmd.issued_at
        entries: list[LedgerEntry] = []
        alerts: list[CreditAlert] = []
        arrive(self.config, self.plans, state, at, recorded_at, entries, alerts)
        if correction:  # remembered by the charge memory, outside the state (as long)
            state.charges.remember_correction(cmd.command_id, state.clock)
        else:
            state.commands.add(key)

        rejection = apply_rule(
            CommandStep(self.config, self.plans, self.price_book, state, cmd, recorded_at, entries)
        )
        if rejection is not None:
            emit(
                state,
                entries,
                EntryType.COMMAND_REJECTED,
                0,
                (),
                cmd.command_id,
                at,
                recorded_at,
                reason=f"{rejection.code}: {rejection}",
            )
        self._settle(state, cmd.command_id, recorded_at, entries, alerts)
        return Outcome(entries, alerts, rejection)

    # == time (timeline.py: expiry, period reset, rollover) =====================================

    def sweep(self, state: AccountState, now: int, recorded_at: int | None = None) -> Outcome:
        """Apply what time alone does (expiry, period reset, notices) up to ``now``.

        For idle accounts, so balances drop on time without usage. ``now`` becomes the
        account's event time: pass the processor's notion of "now minus allowed lateness".
        """
        entries: list[LedgerEntry] = []
        alerts: list[CreditAlert] = []
        if state.period_end and now > state.clock:
            state.clock = now
            if now >= state.next_wakeup:
                advance(
                    self.config,
                    self.plans,
                    state,
                    now,
                    now if recorded_at is None else recorded_at,
                    entries,
                    alerts,
                )
        return Outcome(entries, alerts)

    # == shared helpers ============================================================================

    def _settle(
        self,
        state: AccountState,
        cause: str,
        recorded_at: int,
        entries: list[LedgerEntry],
        alerts: list[CreditAlert],
    ) -> None:
        """After a command: re-sort, catch up on anything now due, check thresholds/top-up."""
        refresh_grants(self.config, state)
        if state.next_wakeup <= state.clock:
            advance(self.config, self.plans, state, state.clock, recorded_at, entries, alerts)
        if state.period_used >= state.next_threshold:
            threshold_alerts(state, cause, state.clock, alerts)
        if state.topup is not None and state.balance < state.topup.threshold:
            maybe_topup(state, cause, state.clock, alerts, self.config.topup_pending_timeout_ms)
