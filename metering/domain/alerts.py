"""Alerts: what the engine tells the product team beside the ledger (thresholds crossed, the
balance exhausted, an auto top-up requested, usage that can never be charged).

Pure functions of the account state; the engine calls them at the points the brief names
(after usage and after commands). An alert never changes a balance.
"""

from __future__ import annotations

from metering.domain.errors import DomainError, UnknownFeatureError
from metering.domain.grants import NEVER
from metering.domain.records import AlertKind, CreditAlert, UsageEvent
from metering.domain.state import AccountState


def threshold_alerts(state: AccountState, cause: str, at: int, alerts: list[CreditAlert]) -> None:
    """One THRESHOLD_CROSSED alert per threshold of the period's allocation newly used up."""
    terms = state.terms
    amounts = terms.threshold_amounts()
    while state.alerted < len(amounts) and state.period_used >= amounts[state.alerted]:
        pct = terms.alert_thresholds[state.alerted]
        state.alerted += 1
        alerts.append(
            CreditAlert(
                f"{state.account_id}/threshold/{state.period_start}/{pct}",
                state.account_id,
                AlertKind.THRESHOLD_CROSSED,
                state.balance,
                cause,
                at,
                state.period_start,
                state.period_end,
                threshold_pct=pct,
                message=f"{pct}% of the period allocation used",
            )
        )
    state.next_threshold = amounts[state.alerted] if state.alerted < len(amounts) else NEVER


def exhausted_alert(state: AccountState, cause: str, at: int) -> CreditAlert:
    """BALANCE_EXHAUSTED: the usage ``cause`` took the balance to zero."""
    return CreditAlert(
        f"{state.account_id}/exhausted/{cause}",
        state.account_id,
        AlertKind.BALANCE_EXHAUSTED,
        0,
        cause,
        at,
        state.period_start,
        state.period_end,
        message="no credits left",
    )


def maybe_topup(
    state: AccountState, cause: str, at: int, alerts: list[CreditAlert], pending_timeout_ms: int
) -> None:
    """One request at a time, at most ``max_requests`` per window, none during back-off."""
    cfg = state.topup
    if cfg is None or not state.terms.topups_allowed:
        return
    pending = state.topup_pending_since
    if pending is not None and at < pending + pending_timeout_ms:
        return
    if at < state.topup_backoff_until:
        return
    recent = [t for t in state.topup_requests if t > at - cfg.window_ms]
    state.topup_requests = recent
    if len(recent) >= cfg.max_requests:
        return
    recent.append(at)
    state.topup_pending_since = at
    alerts.append(
        CreditAlert(
            f"{state.account_id}/topup/{cause}",
            state.account_id,
            AlertKind.AUTO_TOPUP_REQUESTED,
            state.balance,
            cause,
            at,
            state.period_start,
            state.period_end,
            amount=cfg.amount,
            message=f"balance below {cfg.threshold}: top up {cfg.amount}",
        )
    )


def dead_letter_alert(
    state: AccountState, event: UsageEvent, error: DomainError
) -> CreditAlert | None:
    """The alert owed for ``event`` when ``CreditEngine.apply_usage`` raised ``error``, else None.

    Only an unknown feature alerts (``UNKNOWN_FEATURE``): the usage happened (enforcement
    let it through) but can never be charged, which is revenue leaking, not a malformed
    input. Pure and read-only: ``state`` (untouched by the raised error) gives the balance
    and period. The id is ``{account}/unknown_feature/{event_id}``, so every copy of the
    same event (retries, DLQ replays) carries the same id and consumers can dedupe on it.
    """
    if not isinstance(error, UnknownFeatureError):
        return None
    account = state.account_id
    model = f" (model {event.model})" if event.model else ""
    return CreditAlert(
        f"{account}/unknown_feature/{event.event_id}",
        account,
        AlertKind.UNKNOWN_FEATURE,
        state.balance,
        event.event_id,
        event.occurred_at,
        state.period_start,
        state.period_end,
        message=(
            f"feature {event.feature!r}{model} of usage event {event.event_id} is not in the "
            "price book: dead-lettered, not charged"
        ),
    )
