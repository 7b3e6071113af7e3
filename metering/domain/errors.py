"""Typed errors of the credit engine.

Two families, because the processor treats them differently:

* **Raised** errors (:class:`PricingError`, :class:`ValidationError`) mean the input itself is
  unusable. Nothing in the account changes; the processor routes the record to a DLQ.
* **Recorded** refusals (:class:`Rejection` subclasses) are business decisions about a valid
  input (e.g. the free plan may not buy top-ups). They are never raised by the engine: they come
  back in ``Outcome.rejection`` next to the ledger entry that records them.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the credit engine knows about."""

    code = "domain_error"


# -- raised: the input is unusable (DLQ) -------------------------------------------------------


class PricingError(DomainError):
    """A usage event cannot be priced with the price book."""

    code = "pricing_error"


class UnknownFeatureError(PricingError):
    code = "unknown_feature"


class UnknownModelError(PricingError):
    """The feature exists but no rate matches the model, its tier or a wildcard."""

    code = "unknown_model"


class UnknownUnitError(PricingError):
    code = "unknown_unit"


class NegativeQuantityError(PricingError):
    code = "negative_quantity"


class ValidationError(DomainError):
    """A command (or data file) is malformed: missing or out-of-range fields."""

    code = "invalid"


class InvalidAccountId(ValidationError):
    """The account id breaks the identifier rule (``metering.domain.identifiers``)."""

    code = "invalid_account_id"


class LedgerError(DomainError):
    """A ledger handed to :func:`fold` breaks an invariant (gap in seq, bad balance_after)."""

    code = "ledger_error"


# -- recorded: valid input, refused by the rules ------------------------------------------------


class Rejection(DomainError):
    """A refusal the ledger records (COMMAND_REJECTED / USAGE_REJECTED). Returned, not raised."""

    code = "rejected"


class TopupNotAllowed(Rejection):
    code = "topup_not_allowed"


class UnknownGrant(Rejection):
    code = "unknown_grant"


class UnknownPlan(Rejection):
    code = "unknown_plan"


class InsufficientBalance(Rejection):
    code = "insufficient_balance"


class DuplicateGrant(Rejection):
    code = "duplicate_grant"


class UsageBlocked(Rejection):
    """Part (or all) of a usage event found no credits and the policy does not allow overage."""

    code = "blocked"


class FeatureNotInPlan(Rejection):
    code = "feature_not_in_plan"


class OutsideDedupeWindow(Rejection):
    """The event is older than what the idempotency window still remembers.

    Charging it could charge a duplicate twice, so it is recorded but not charged.
    """

    code = "outside_dedupe_window"


class UnknownEvent(Rejection):
    """A correction names an event the account has no charge for: never charged, or charged
    longer ago than the idempotency window remembers."""

    code = "unknown_event"


class AlreadyVoided(Rejection):
    code = "already_voided"


class NotPriced(Rejection):
    """An amend's corrected units cannot be priced (a unit the event's feature has no rate
    for): the amend is refused and the original charge stands."""

    code = "pricing_error"
