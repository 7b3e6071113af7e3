"""The credit engine: pure, deterministic domain code (no I/O, no wall clock).

Typical use::

    from metering.domain import CreditEngine, load_price_book, load_plans

    engine = CreditEngine(load_price_book(), load_plans())
    state = engine.new_state("acct-1")
    outcome = engine.apply_usage(state, event, recorded_at=now_ms)
    publish(outcome.entries, outcome.alerts)      # the engine mutated ``state`` in place
    table[account_id] = state.to_bytes()

See docs/engine.md for the rules. One rule per module: ``pricing``, ``grants`` (burn-down),
``commands`` (grants, adjustments, voids, plans, overrides, top-ups), ``terms`` (plans and
overrides), ``timeline`` (what time does, in order), ``expiry``, ``rollover`` (the period reset
and its rollover), ``alerts``, ``entries`` (writing ledger entries), ``fold`` and ``catch_up``
(the ledger back into state); ``engine`` is the facade.

May import: nothing outside ``metering.domain`` but the standard library and PyYAML.
"""

from metering.domain.catch_up import CaughtUp, catch_up
from metering.domain.config import DEFAULT_CONFIG, EngineConfig
from metering.domain.engine import CreditEngine, Outcome
from metering.domain.errors import (
    DomainError,
    DuplicateGrant,
    FeatureNotInPlan,
    InsufficientBalance,
    LedgerError,
    NegativeQuantityError,
    OutsideDedupeWindow,
    PricingError,
    Rejection,
    TopupNotAllowed,
    UnknownFeatureError,
    UnknownGrant,
    UnknownModelError,
    UnknownPlan,
    UnknownUnitError,
    UsageBlocked,
    ValidationError,
)
from metering.domain.fold import BALANCE_TYPES, conserved_balance, fold
from metering.domain.loading import (
    load_plans,
    load_price_book,
    plans_from_text,
    price_book_from_text,
)
from metering.domain.money import MICROS_PER_CREDIT, credits_to_micros, format_credits
from metering.domain.plans import Plan, PlanCatalog, Terms
from metering.domain.pricing import PriceBook, PriceVersion, UnitRate
from metering.domain.records import (
    AccountOverride,
    AccountTerms,
    AlertKind,
    Allocation,
    AutoTopupConfig,
    CommandKind,
    CreditAlert,
    CreditCommand,
    EntryType,
    GrantInfo,
    LedgerEntry,
    UsageEvent,
)
from metering.domain.state import AccountState, AccountView

__all__ = [
    "BALANCE_TYPES",
    "DEFAULT_CONFIG",
    "MICROS_PER_CREDIT",
    "AccountOverride",
    "AccountState",
    "AccountTerms",
    "AccountView",
    "AlertKind",
    "Allocation",
    "AutoTopupConfig",
    "CaughtUp",
    "CommandKind",
    "CreditAlert",
    "CreditCommand",
    "CreditEngine",
    "DomainError",
    "DuplicateGrant",
    "EngineConfig",
    "EntryType",
    "FeatureNotInPlan",
    "GrantInfo",
    "InsufficientBalance",
    "LedgerEntry",
    "LedgerError",
    "NegativeQuantityError",
    "Outcome",
    "OutsideDedupeWindow",
    "Plan",
    "PlanCatalog",
    "PriceBook",
    "PriceVersion",
    "PricingError",
    "Rejection",
    "Terms",
    "TopupNotAllowed",
    "UnitRate",
    "UnknownFeatureError",
    "UnknownGrant",
    "UnknownModelError",
    "UnknownPlan",
    "UnknownUnitError",
    "UsageBlocked",
    "UsageEvent",
    "ValidationError",
    "catch_up",
    "conserved_balance",
    "credits_to_micros",
    "fold",
    "format_credits",
    "load_plans",
    "load_price_book",
    "plans_from_text",
    "price_book_from_text",
]
