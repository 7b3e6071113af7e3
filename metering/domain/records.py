"""Immutable records that mirror the Avro contracts in ``schemas/*.avsc``.

Each record has ``to_record()`` (a plain dict with the Avro field names, ready for
``AvroCodec.encode``) and ``from_record(dict)`` (what ``AvroCodec.decode`` returns).

Records are ``typing.NamedTuple`` rather than frozen dataclasses on purpose: the engine builds
one ``LedgerEntry`` per usage event on its hot path, and a 21-field frozen dataclass costs about
2.6 us to construct against 0.36 us for a NamedTuple. Both are immutable and typed.
Timestamps are int epoch milliseconds; amounts are int micro-credits.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

_EMPTY: Mapping[str, str] = MappingProxyType({})
_new = tuple.__new__
"""Builds a NamedTuple from a tuple without its Python-level ``__new__`` (hot paths)."""


class EntryType(StrEnum):
    GRANT_CREATED = "GRANT_CREATED"
    USAGE_DEBIT = "USAGE_DEBIT"
    GRANT_EXPIRED = "GRANT_EXPIRED"
    GRANT_VOIDED = "GRANT_VOIDED"
    PERIOD_RESET = "PERIOD_RESET"
    ROLLOVER = "ROLLOVER"
    ADJUSTMENT = "ADJUSTMENT"
    OVERAGE = "OVERAGE"
    USAGE_REJECTED = "USAGE_REJECTED"
    PLAN_ASSIGNED = "PLAN_ASSIGNED"
    OVERRIDE_SET = "OVERRIDE_SET"
    COMMAND_REJECTED = "COMMAND_REJECTED"
    USAGE_REVERSED = "USAGE_REVERSED"
    """A voided (or amended) usage charge given back: ``amount`` is the credits reversed (debit
    and overage), ``allocations`` the debit's parts back to grants (a correction grant opens
    for parts whose grants are gone), ``overage_after`` lower by the overage of the current
    period."""


class CommandKind(StrEnum):
    GRANT = "grant"
    PURCHASE = "purchase"
    PROMOTION = "promotion"
    ADJUSTMENT = "adjustment"
    VOID_GRANT = "void_grant"
    ASSIGN_PLAN = "assign_plan"
    SET_OVERRIDE = "set_override"
    CONFIGURE_AUTO_TOPUP = "configure_auto_topup"
    TOPUP_DECLINED = "topup_declined"
    VOID_USAGE = "void_usage"
    AMEND_USAGE = "amend_usage"


class AlertKind(StrEnum):
    THRESHOLD_CROSSED = "THRESHOLD_CROSSED"
    BALANCE_EXHAUSTED = "BALANCE_EXHAUSTED"
    GRANT_EXPIRING = "GRANT_EXPIRING"
    AUTO_TOPUP_REQUESTED = "AUTO_TOPUP_REQUESTED"
    UNKNOWN_FEATURE = "UNKNOWN_FEATURE"
    """A usage event the price book cannot price (feature unknown): dead-lettered, not charged.
    CreditAlert v2."""


# -- usage ---------------------------------------------------------------------------------------


class UsageEvent(NamedTuple):
    """One metered action. ``event_id`` is the idempotency key."""

    event_id: str
    account_id: str
    feature: str
    units: Mapping[str, int]
    occurred_at: int
    subject: str = "default"
    model: str | None = None
    source: str = ""
    attributes: Mapping[str, str] = _EMPTY
    reservation_id: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "account_id": self.account_id,
            "subject": self.subject,
            "feature": self.feature,
            "model": self.model,
            "units": dict(self.units),
            "occurred_at": self.occurred_at,
            "source": self.source,
            "attributes": dict(self.attributes),
            "reservation_id": self.reservation_id,
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> UsageEvent:
        return cls(
            event_id=r["event_id"],
            account_id=r["account_id"],
            feature=r["feature"],
            units=r["units"],
            occurred_at=int(r["occurred_at"]),
            subject=r.get("subject") or "default",
            model=r.get("model"),
            source=r.get("source") or "",
            attributes=r.get("attributes") or _EMPTY,
            reservation_id=r.get("reservation_id"),
        )


# -- commands ------------------------------------------------------------------------------------


class AccountOverride(NamedTuple):
    """Per-account terms replacing the plan's; ``None`` keeps the plan's value."""

    monthly_credits: int | None = None
    overage_policy: str | None = None
    overage_limit: int | None = None
    trial_features: tuple[str, ...] = ()
    trial_until: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "monthly_credits": self.monthly_credits,
            "overage_policy": self.overage_policy,
            "overage_limit": self.overage_limit,
            "trial_features": list(self.trial_features),
            "trial_until": self.trial_until,
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> AccountOverride:
        return cls(
            monthly_credits=r.get("monthly_credits"),
            overage_policy=r.get("overage_policy"),
            overage_limit=r.get("overage_limit"),
            trial_features=tuple(r.get("trial_features") or ()),
            trial_until=r.get("trial_until"),
        )


class AutoTopupConfig(NamedTuple):
    """Opt-in auto top-up: below ``threshold`` ask the payment side for ``amount``."""

    enabled: bool
    threshold: int
    amount: int
    max_requests: int = 3
    window_ms: int = 86_400_000

    def to_record(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> AutoTopupConfig:
        return cls(
            enabled=bool(r["enabled"]),
            threshold=int(r["threshold"]),
            amount=int(r["amount"]),
            max_requests=int(r.get("max_requests", 3)),
            window_ms=int(r.get("window_ms", 86_400_000)),
        )


class CreditCommand(NamedTuple):
    """An instruction from billing or admin. ``command_id`` is the idempotency key."""

    command_id: str
    account_id: str
    kind: CommandKind
    issued_at: int
    amount: int | None = None
    grant_id: str | None = None
    grant_source: str | None = None
    priority: int | None = None
    effective_at: int | None = None
    expires_at: int | None = None
    plan_id: str | None = None
    reason: str | None = None
    cost_basis_micros: int | None = None
    currency: str | None = None
    override: AccountOverride | None = None
    auto_topup: AutoTopupConfig | None = None
    event_id: str | None = None
    """``void_usage``/``amend_usage``: the usage event whose charge is reversed."""
    units: Mapping[str, int] | None = None
    """``amend_usage``: the event's corrected units (all of them), priced at its occurred_at."""

    def to_record(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "account_id": self.account_id,
            "kind": self.kind.value,
            "amount": self.amount,
            "grant_id": self.grant_id,
            "grant_source": self.grant_source,
            "priority": self.priority,
            "effective_at": self.effective_at,
            "expires_at": self.expires_at,
            "plan_id": self.plan_id,
            "reason": self.reason,
            "cost_basis_micros": self.cost_basis_micros,
            "currency": self.currency,
            "override": None if self.override is None else self.override.to_record(),
            "auto_topup": None if self.auto_topup is None else self.auto_topup.to_record(),
            "event_id": self.event_id,
            "units": None if self.units is None else dict(self.units),
            "issued_at": self.issued_at,
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> CreditCommand:
        get = r.get
        override = get("override")
        auto_topup = get("auto_topup")
        # Positional, through tuple.__new__: corrections come at a share of the usage rate.
        return _new(
            cls,
            (
                r["command_id"],
                r["account_id"],
                CommandKind(r["kind"]),
                int(r["issued_at"]),
                get("amount"),
                get("grant_id"),
                get("grant_source"),
                get("priority"),
                get("effective_at"),
                get("expires_at"),
                get("plan_id"),
                get("reason"),
                get("cost_basis_micros"),
                get("currency"),
                None if override is None else AccountOverride.from_record(override),
                None if auto_topup is None else AutoTopupConfig.from_record(auto_topup),
                get("event_id"),
                get("units"),
            ),
        )


# -- ledger --------------------------------------------------------------------------------------


class Allocation(NamedTuple):
    """Signed change of one grant's ``remaining`` (drawn < 0, created > 0)."""

    grant_id: str
    amount: int


class GrantInfo(NamedTuple):
    """The full description of a grant, carried by the entry that creates it."""

    grant_id: str
    source: str
    amount: int
    priority: int
    effective_at: int
    expires_at: int | None = None
    cost_basis_micros: int | None = None

    def to_record(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> GrantInfo:
        return cls(
            grant_id=r["grant_id"],
            source=r["source"],
            amount=int(r["amount"]),
            priority=int(r["priority"]),
            effective_at=int(r["effective_at"]),
            expires_at=r.get("expires_at"),
            cost_basis_micros=r.get("cost_basis_micros"),
        )


class AccountTerms(NamedTuple):
    """The account's effective terms as published on PLAN_ASSIGNED/OVERRIDE_SET/PERIOD_RESET."""

    plan_id: str
    overage_policy: str
    overage_limit: int
    monthly_credits: int
    features: tuple[str, ...] | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "overage_policy": self.overage_policy,
            "overage_limit": self.overage_limit,
            "features": None if self.features is None else list(self.features),
            "monthly_credits": self.monthly_credits,
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> AccountTerms:
        features = r.get("features")
        return cls(
            plan_id=r["plan_id"],
            overage_policy=r["overage_policy"],
            overage_limit=int(r["overage_limit"]),
            monthly_credits=int(r["monthly_credits"]),
            features=None if features is None else tuple(features),
        )


class LedgerEntry(NamedTuple):
    """One immutable fact of the credit ledger. See docs/engine.md for the amount rules."""

    entry_id: str
    account_id: str
    seq: int
    type: EntryType
    amount: int
    allocations: tuple[Allocation, ...]
    balance_after: int
    overage_after: int
    cause_id: str
    occurred_at: int
    recorded_at: int
    period_start: int
    period_end: int
    subject: str | None = None
    feature: str | None = None
    model: str | None = None
    price_version: str | None = None
    reason: str | None = None
    reservation_id: str | None = None
    grant: GrantInfo | None = None
    terms: AccountTerms | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "account_id": self.account_id,
            "seq": self.seq,
            "type": self.type.value,
            "amount": self.amount,
            "allocations": [{"grant_id": g, "amount": a} for g, a in self.allocations],
            "balance_after": self.balance_after,
            "overage_after": self.overage_after,
            "cause_id": self.cause_id,
            "subject": self.subject,
            "feature": self.feature,
            "model": self.model,
            "price_version": self.price_version,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "reason": self.reason,
            "reservation_id": self.reservation_id,
            "grant": None if self.grant is None else self.grant.to_record(),
            "terms": None if self.terms is None else self.terms.to_record(),
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> LedgerEntry:
        grant = r.get("grant")
        terms = r.get("terms")
        return cls(
            entry_id=r["entry_id"],
            account_id=r["account_id"],
            seq=int(r["seq"]),
            type=EntryType(r["type"]),
            amount=int(r["amount"]),
            allocations=tuple(
                Allocation(a["grant_id"], int(a["amount"])) for a in r.get("allocations") or ()
            ),
            balance_after=int(r["balance_after"]),
            overage_after=int(r["overage_after"]),
            cause_id=r["cause_id"],
            occurred_at=int(r["occurred_at"]),
            recorded_at=int(r["recorded_at"]),
            period_start=int(r["period_start"]),
            period_end=int(r["period_end"]),
            subject=r.get("subject"),
            feature=r.get("feature"),
            model=r.get("model"),
            price_version=r.get("price_version"),
            reason=r.get("reason"),
            reservation_id=r.get("reservation_id"),
            grant=None if grant is None else GrantInfo.from_record(grant),
            terms=None if terms is None else AccountTerms.from_record(terms),
        )


# -- alerts --------------------------------------------------------------------------------------


class CreditAlert(NamedTuple):
    """A notice for humans or the payment side. ``alert_id`` is deterministic."""

    alert_id: str
    account_id: str
    kind: AlertKind
    balance: int
    cause_id: str
    occurred_at: int
    period_start: int
    period_end: int
    threshold_pct: int | None = None
    grant_id: str | None = None
    amount: int | None = None
    message: str = ""

    def to_record(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "account_id": self.account_id,
            "kind": self.kind.value,
            "threshold_pct": self.threshold_pct,
            "grant_id": self.grant_id,
            "amount": self.amount,
            "balance": self.balance,
            "cause_id": self.cause_id,
            "occurred_at": self.occurred_at,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "message": self.message,
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> CreditAlert:
        return cls(
            alert_id=r["alert_id"],
            account_id=r["account_id"],
            kind=AlertKind(r["kind"]),
            balance=int(r["balance"]),
            cause_id=r["cause_id"],
            occurred_at=int(r["occurred_at"]),
            period_start=int(r["period_start"]),
            period_end=int(r["period_end"]),
            threshold_pct=r.get("threshold_pct"),
            grant_id=r.get("grant_id"),
            amount=r.get("amount"),
            message=r.get("message") or "",
        )
