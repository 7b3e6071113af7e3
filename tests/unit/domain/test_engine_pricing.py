"""Price book: lookup fallbacks, block rates, rounding once per event, typed errors, versions."""

from __future__ import annotations

import pytest
from engine_testkit import CREDIT, PLANS, PRICE_BOOK, T0

from metering.domain import (
    NegativeQuantityError,
    UnknownFeatureError,
    UnknownModelError,
    UnknownUnitError,
    ValidationError,
    credits_to_micros,
    format_credits,
    plans_from_text,
    price_book_from_text,
)
from metering.domain.periods import next_anchor_after, parse_instant, period_bounds

BOOK = """
versions:
  - version: v1
    effective_from: "2025-01-01T00:00:00Z"
    model_tiers: {big-model: premium}
    features:
      text:
        "*": {requests: 1, tokens: {credits: "0.000001", per: 1000}}
        premium:
          requests: 2
          tokens: {credits: "0.0005", per: 1000}
          chars: {micros: 1, per: 2}
        exact-model: {requests: 3}
      strict:
        only-model: {requests: 1}
  - version: v2
    effective_from: "2025-06-01T00:00:00Z"
    features:
      text:
        "*": {requests: 10}
"""


def test_rates_fall_back_from_model_to_tier_to_wildcard() -> None:
    book = price_book_from_text(BOOK)
    at = parse_instant("2025-02-01T00:00:00Z")
    assert book.price("text", "exact-model", {"requests": 1}, at) == (3 * CREDIT, "v1")
    assert book.price("text", "big-model", {"requests": 1}, at) == (2 * CREDIT, "v1")
    assert book.price("text", "unknown-model", {"requests": 1}, at) == (CREDIT, "v1")
    assert book.price("text", None, {"requests": 1}, at) == (CREDIT, "v1")


def test_price_rounds_up_once_per_event_not_per_unit() -> None:
    book = price_book_from_text(BOOK)
    at = parse_instant("2025-02-01T00:00:00Z")
    # 1 micro-credit per 1k tokens: 1 token is 0.001 micro-credit.
    assert book.price("text", None, {"tokens": 1}, at)[0] == 1  # rounded up
    assert book.price("text", None, {"tokens": 1000}, at)[0] == 1
    assert book.price("text", None, {"tokens": 1001}, at)[0] == 2
    # Half a micro-credit per token and per char: rounding per unit would give 2, not 1.
    assert book.price("text", "big-model", {"tokens": 1, "chars": 1}, at)[0] == 1
    assert book.price("text", "big-model", {"tokens": 3, "chars": 0}, at)[0] == 2
    assert book.price("text", None, {"requests": 0, "tokens": 0}, at)[0] == 0


def test_versions_apply_by_event_time() -> None:
    book = price_book_from_text(BOOK)
    assert book.price("text", None, {"requests": 1}, parse_instant("2025-06-01"))[1] == "v2"
    assert book.price("text", None, {"requests": 1}, parse_instant("2025-05-31"))[1] == "v1"
    assert book.price("text", None, {"requests": 1}, 0)[1] == "v1"  # before the first: first


def test_typed_pricing_errors() -> None:
    book = price_book_from_text(BOOK)
    with pytest.raises(UnknownFeatureError):
        book.price("video", None, {"requests": 1}, T0)
    with pytest.raises(UnknownModelError):
        book.price("strict", "other", {"requests": 1}, parse_instant("2025-02-01"))
    with pytest.raises(UnknownUnitError):
        book.price("text", None, {"frames": 1}, T0)
    with pytest.raises(NegativeQuantityError):
        book.price("text", None, {"requests": -1}, T0)


def test_shipped_price_book_has_the_seed_prices() -> None:
    def price(feature: str, units: dict[str, int], model: str | None = None) -> int:
        return PRICE_BOOK.price(feature, model, units, T0)[0]

    assert price("text_generation", {"requests": 1}) == CREDIT
    assert price("image_generation", {"images": 1}) == 25 * CREDIT
    assert price("document_analysis", {"pages": 3}) == 6 * CREDIT
    assert price("compute", {"compute_ms": 2000}) == CREDIT
    standard = price("text_generation", {"input_tokens": 1000}, "gpt-4o-mini")
    premium = price("text_generation", {"input_tokens": 1000}, "gpt-4o")
    assert premium > standard > 0


def test_shipped_plans() -> None:
    assert PLANS.get("free") is not None and not PLANS.plans["free"].topups_allowed
    assert {"free", "starter", "growth", "enterprise"} <= set(PLANS.plans)
    assert PLANS.plans["growth"].overage_policy == "allow"


@pytest.mark.parametrize(
    "text",
    [
        "versions: []",
        "versions: [{version: x, features: {f: {'*': {u: '0.0000001'}}}}]",
        "versions: [{version: x, features: {f: {'*': {u: {credits: 1, per: 0}}}}}]",
        "versions: [{version: x, features: {f: {'*': {u: -1}}}}]",
        "versions: [{version: x, features: {}}, {version: x, features: {}}]",
        "[1, 2]",
    ],
)
def test_bad_price_books_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        price_book_from_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "plans: {}",
        "plans: {p: {monthly_credits: -1}}",
        "plans: {p: {overage: {policy: maybe}}}",
        "plans: {p: {anchor_day: 32}}",
        "plans: {none: {monthly_credits: 1}}",
        "plans: {p: {rollover: sometimes}}",
    ],
)
def test_bad_plans_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        plans_from_text(text)


def test_money_is_exact() -> None:
    assert credits_to_micros("0.000001") == 1
    assert credits_to_micros(0.1) == 100_000
    assert credits_to_micros(25) == 25 * CREDIT
    assert format_credits(1_500_000) == "1.5" and format_credits(-25 * CREDIT) == "-25"
    with pytest.raises(ValidationError):
        credits_to_micros(True)


def test_periods_follow_the_anchor_day() -> None:
    assert period_bounds(parse_instant("2025-03-10"), 1) == (
        parse_instant("2025-03-01"),
        parse_instant("2025-04-01"),
    )
    assert period_bounds(parse_instant("2025-03-10"), 15) == (
        parse_instant("2025-02-15"),
        parse_instant("2025-03-15"),
    )
    # Day 31 falls on the last day of short months.
    assert next_anchor_after(parse_instant("2025-01-31"), 31) == parse_instant("2025-02-28")
    assert next_anchor_after(parse_instant("2024-12-31T12:00:00Z"), 1) == parse_instant(
        "2025-01-01"
    )
