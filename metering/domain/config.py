"""Engine knobs that are policy, not plan data (windows, notice periods, default priorities)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from metering.domain.errors import ValidationError

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

DEFAULT_PRIORITIES: Mapping[str, int] = MappingProxyType(
    {
        "promotion": 10,
        "rollover": 20,
        "correction": 25,
        "plan": 30,
        "adjustment": 40,
        "purchase": 50,
    }
)
"""Lower burns first: promotions, then last period's rollover, credits given back by a
correction (until the period ends), the plan, adjustments, purchases."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tunable rules of the credit engine. All durations are milliseconds of event time."""

    late_grace_ms: int = HOUR_MS
    """A closed period still takes late usage for this long after it ends."""
    dedupe_window_ms: int = 35 * DAY_MS
    """How long processed usage event ids are remembered (account event time): the longest
    backdating Stripe accepts. An event older than this is recorded, never charged."""
    dedupe_max_ids: int | None = None
    """An optional per-account cap on remembered ids, for the in-process window only; none by
    default (a cap makes the window shrink as an account gets busier)."""
    charge_window: bool = False
    """Keep what each usage event was charged in the account's state, so ``void_usage`` can
    give it back (the pure engine: tests, tools). Off, the state stays the size of its grants
    and corrections are refused unless a charge store is attached (the processor's id store:
    docs/corrections.md)."""
    expiring_notice_ms: int = 7 * DAY_MS
    """GRANT_EXPIRING goes out this long before a grant expires."""
    expiring_notice_sources: frozenset[str] = frozenset({"purchase", "promotion", "adjustment"})
    """Plan and rollover grants expire every period by design, so they are not announced."""
    topup_backoff_ms: int = HOUR_MS
    """Back-off after a declined top-up; doubles per consecutive decline (capped at 64x)."""
    topup_pending_timeout_ms: int = DAY_MS
    """A top-up request unanswered this long no longer blocks a new one."""
    default_plan: str | None = None
    """Plan given to an account on first touch; ``None`` leaves it on the 'none' terms."""
    priorities: Mapping[str, int] = field(default_factory=lambda: DEFAULT_PRIORITIES)

    def __post_init__(self) -> None:
        if self.dedupe_max_ids is not None and self.dedupe_max_ids < 1:
            raise ValidationError("dedupe_max_ids must be at least 1")
        if self.dedupe_window_ms < self.late_grace_ms:
            raise ValidationError("dedupe_window_ms must cover late_grace_ms")
        if min(self.late_grace_ms, self.expiring_notice_ms, self.topup_backoff_ms) < 0:
            raise ValidationError("durations cannot be negative")


DEFAULT_CONFIG = EngineConfig()
