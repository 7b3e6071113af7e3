"""Plans (data) and the effective :class:`Terms` of an account (plan + per-account override).

An account keeps a *snapshot* of its terms. The snapshot is refreshed from the plan catalog on
``assign_plan``, ``set_override`` and at every period reset, so a plan published with new
numbers takes effect at each account's next reset, never in the middle of a period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metering.domain.errors import ValidationError
from metering.domain.money import credits_to_micros
from metering.domain.records import AccountOverride, AccountTerms

BLOCK = "block"
ALLOW = "allow"
UNLIMITED = "unlimited"
OVERAGE_POLICIES = frozenset({BLOCK, ALLOW, UNLIMITED})
NO_PLAN = "none"


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan as published in ``plans.yaml``. Amounts are micro-credits."""

    plan_id: str
    monthly_credits: int
    anchor_day: int = 1
    rollover_cap: int | None = None
    """Largest ROLLOVER grant in micro-credits; ``None`` means no rollover."""
    rollover_cap_months: int | None = None
    """Alternative cap: this many months of the account's allocation (overrides included)."""
    overage_policy: str = BLOCK
    overage_limit: int = 0
    topups_allowed: bool = True
    alert_thresholds: tuple[int, ...] = (50, 80, 100)
    features: frozenset[str] | None = None
    """Features the plan includes; ``None`` means every feature."""

    def __post_init__(self) -> None:
        if self.monthly_credits < 0:
            raise ValidationError(f"plan {self.plan_id}: monthly_credits cannot be negative")
        if not 1 <= self.anchor_day <= 31:
            raise ValidationError(f"plan {self.plan_id}: anchor_day must be 1..31")
        if self.overage_policy not in OVERAGE_POLICIES:
            raise ValidationError(
                f"plan {self.plan_id}: bad overage policy {self.overage_policy!r}"
            )
        if self.overage_limit < 0:
            raise ValidationError(f"plan {self.plan_id}: overage_limit cannot be negative")
        if any(not 0 < t <= 1000 for t in self.alert_thresholds):
            raise ValidationError(f"plan {self.plan_id}: alert thresholds are percentages > 0")


NO_PLAN_TERMS_PLAN = Plan(plan_id=NO_PLAN, monthly_credits=0)
"""Terms of an account that has no plan yet: no allocation, hard limit, every feature."""


@dataclass(frozen=True, slots=True)
class Terms:
    """The account's effective terms: its plan with the override applied."""

    plan_id: str
    monthly_credits: int
    anchor_day: int
    rollover_cap: int | None
    overage_policy: str
    overage_limit: int
    topups_allowed: bool
    alert_thresholds: tuple[int, ...]
    features: frozenset[str] | None
    trial_features: frozenset[str] = frozenset()
    trial_until: int | None = None

    def allows(self, feature: str, at: int) -> bool:
        """Whether ``feature`` is included at event time ``at`` (plan or a running trial)."""
        if self.features is None or feature in self.features:
            return True
        return (
            feature in self.trial_features
            and self.trial_until is not None
            and at < self.trial_until
        )

    def threshold_amounts(self) -> tuple[int, ...]:
        """Micro-credits of period usage at which each alert threshold is crossed."""
        m = self.monthly_credits
        return tuple(-(-m * pct // 100) for pct in self.alert_thresholds) if m > 0 else ()

    def threshold_amount(self, index: int) -> int | None:
        """``threshold_amounts()[index]``, or None past the last (without building them all:
        every command asks for the next one)."""
        m = self.monthly_credits
        thresholds = self.alert_thresholds
        return -(-m * thresholds[index] // 100) if m > 0 and index < len(thresholds) else None

    def published(self) -> AccountTerms:
        """The ``AccountTerms`` record for PLAN_ASSIGNED / OVERRIDE_SET / PERIOD_RESET."""
        features = None
        if self.features is not None:
            features = tuple(sorted(self.features | self.trial_features))
        return AccountTerms(
            plan_id=self.plan_id,
            overage_policy=self.overage_policy,
            overage_limit=self.overage_limit,
            monthly_credits=self.monthly_credits,
            features=features,
        )

    def to_json(self) -> list[Any]:
        return [
            self.plan_id,
            self.monthly_credits,
            self.anchor_day,
            self.rollover_cap,
            self.overage_policy,
            self.overage_limit,
            self.topups_allowed,
            list(self.alert_thresholds),
            None if self.features is None else sorted(self.features),
            sorted(self.trial_features),
            self.trial_until,
        ]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Terms:
        return cls(
            plan_id=raw[0],
            monthly_credits=raw[1],
            anchor_day=raw[2],
            rollover_cap=raw[3],
            overage_policy=raw[4],
            overage_limit=raw[5],
            topups_allowed=raw[6],
            alert_thresholds=tuple(raw[7]),
            features=None if raw[8] is None else frozenset(raw[8]),
            trial_features=frozenset(raw[9]),
            trial_until=raw[10],
        )


def resolve_terms(plan: Plan, override: AccountOverride | None) -> Terms:
    """Plan + override -> effective terms. A ``None`` override field keeps the plan's value."""
    o = override or AccountOverride()
    monthly = plan.monthly_credits if o.monthly_credits is None else o.monthly_credits
    cap = plan.rollover_cap
    if plan.rollover_cap_months is not None:
        cap = plan.rollover_cap_months * monthly
    return Terms(
        plan_id=plan.plan_id,
        monthly_credits=monthly,
        anchor_day=plan.anchor_day,
        rollover_cap=cap,
        overage_policy=plan.overage_policy if o.overage_policy is None else o.overage_policy,
        overage_limit=plan.overage_limit if o.overage_limit is None else o.overage_limit,
        topups_allowed=plan.topups_allowed,
        alert_thresholds=tuple(sorted(plan.alert_thresholds)),
        features=plan.features,
        trial_features=frozenset(o.trial_features),
        trial_until=o.trial_until,
    )


def validate_override(override: AccountOverride) -> None:
    """Raise :class:`ValidationError` for an override the engine cannot apply."""
    if override.monthly_credits is not None and override.monthly_credits < 0:
        raise ValidationError("override: monthly_credits cannot be negative")
    if override.overage_policy is not None and override.overage_policy not in OVERAGE_POLICIES:
        raise ValidationError(f"override: bad overage policy {override.overage_policy!r}")
    if override.overage_limit is not None and override.overage_limit < 0:
        raise ValidationError("override: overage_limit cannot be negative")


class PlanCatalog:
    """Plans by id."""

    __slots__ = ("plans",)

    def __init__(self, plans: Iterable[Plan]) -> None:
        self.plans: dict[str, Plan] = {}
        for plan in plans:
            if plan.plan_id in self.plans or plan.plan_id == NO_PLAN:
                raise ValidationError(f"plan id {plan.plan_id!r} is duplicated or reserved")
            self.plans[plan.plan_id] = plan

    def get(self, plan_id: str) -> Plan | None:
        if plan_id == NO_PLAN:
            return NO_PLAN_TERMS_PLAN
        return self.plans.get(plan_id)

    def __contains__(self, plan_id: object) -> bool:
        return plan_id in self.plans


def _parse_plan(plan_id: str, raw: Mapping[str, Any]) -> Plan:
    where = f"plan {plan_id}"
    rollover = raw.get("rollover", "none")
    cap: int | None = None
    cap_months: int | None = None
    if isinstance(rollover, Mapping):
        if "cap_months" in rollover:
            cap_months = int(rollover["cap_months"])
        else:
            cap = credits_to_micros(rollover.get("cap"), what=f"{where} rollover.cap")
    elif rollover not in (None, "none", False):
        raise ValidationError(f"{where}: rollover is 'none', {{cap: N}} or {{cap_months: N}}")
    overage = raw.get("overage") or {}
    if isinstance(overage, str):
        overage = {"policy": overage}
    limit = overage.get("limit", 0)
    features = raw.get("features")
    return Plan(
        plan_id=plan_id,
        monthly_credits=credits_to_micros(raw.get("monthly_credits", 0), what=where),
        anchor_day=int(raw.get("anchor_day", 1)),
        rollover_cap=cap,
        rollover_cap_months=cap_months,
        overage_policy=str(overage.get("policy", BLOCK)),
        overage_limit=credits_to_micros(limit, what=f"{where} overage.limit"),
        topups_allowed=bool(raw.get("topups", True)),
        alert_thresholds=tuple(int(t) for t in raw.get("alert_thresholds", (50, 80, 100))),
        features=None if features is None else frozenset(str(f) for f in features),
    )


def parse_plans(data: Mapping[str, Any]) -> PlanCatalog:
    """Build a :class:`PlanCatalog` from parsed YAML/JSON (see ``metering/data/plans.yaml``)."""
    raw_plans = data.get("plans")
    if not isinstance(raw_plans, Mapping) or not raw_plans:
        raise ValidationError("plans: 'plans' must be a non-empty map of plan id to plan")
    return PlanCatalog(_parse_plan(str(pid), raw) for pid, raw in raw_plans.items())
