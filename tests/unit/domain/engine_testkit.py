"""Shared builders for the credit engine tests (imported by the test modules of this folder)."""

from __future__ import annotations

from typing import Any

from metering.domain import (
    MICROS_PER_CREDIT,
    AccountState,
    CommandKind,
    CreditCommand,
    CreditEngine,
    EngineConfig,
    LedgerEntry,
    Outcome,
    UsageEvent,
    fold,
    load_plans,
    load_price_book,
    plans_from_text,
)
from metering.domain.periods import parse_instant

CREDIT = MICROS_PER_CREDIT
HOUR = 3_600_000
DAY = 24 * HOUR
T0 = parse_instant("2025-03-10T00:00:00Z")
APR_1 = parse_instant("2025-04-01T00:00:00Z")
MAY_1 = parse_instant("2025-05-01T00:00:00Z")

PRICE_BOOK = load_price_book()
PLANS = load_plans()


def make_engine(plans_yaml: str | None = None, **config: Any) -> CreditEngine:
    plans = PLANS if plans_yaml is None else plans_from_text(plans_yaml)
    return CreditEngine(PRICE_BOOK, plans, EngineConfig(**{"charge_window": True, **config}))


def command(
    kind: CommandKind | str, command_id: str, at: int, account: str = "a1", **fields: Any
) -> CreditCommand:
    return CreditCommand(command_id, account, CommandKind(kind), at, **fields)


def text(event_id: str, at: int, account: str = "a1", **fields: Any) -> UsageEvent:
    """A simple text request: exactly 1 credit."""
    return UsageEvent(event_id, account, "text_generation", {"requests": 1}, at, **fields)


def image(event_id: str, at: int, account: str = "a1", **fields: Any) -> UsageEvent:
    """One image: 25 credits."""
    return UsageEvent(event_id, account, "image_generation", {"images": 1}, at, **fields)


class Ledger:
    """Drives one account and keeps everything it emitted, checking fold after every step."""

    def __init__(self, engine: CreditEngine, account: str = "a1") -> None:
        self.engine = engine
        self.state: AccountState = engine.new_state(account)
        self.entries: list[LedgerEntry] = []
        self.outcomes: list[Outcome] = []

    def _keep(self, outcome: Outcome) -> Outcome:
        self.entries.extend(outcome.entries)
        self.outcomes.append(outcome)
        assert fold(self.entries) == self.state.view()
        return outcome

    def usage(self, event: UsageEvent) -> Outcome:
        return self._keep(self.engine.apply_usage(self.state, event, event.occurred_at))

    def command(self, cmd: CreditCommand) -> Outcome:
        return self._keep(self.engine.apply_command(self.state, cmd, cmd.issued_at))

    def sweep(self, now: int) -> Outcome:
        return self._keep(self.engine.sweep(self.state, now))

    def types(self, outcome: Outcome) -> list[str]:
        return [e.type.value for e in outcome.entries]

    @property
    def balance(self) -> int:
        return self.state.balance
