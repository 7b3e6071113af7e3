"""One burn-down rule for every debit (metering.domain.grants.burn): usage and negative
adjustments draw grants in burn order, and only grants in effect at the account's clock."""

from __future__ import annotations

from engine_testkit import CREDIT, DAY, T0, Ledger, command, make_engine, text
from hypothesis import given
from hypothesis import strategies as st

from metering.domain import InsufficientBalance
from metering.domain.grants import Grant, burn, drawable


def _future_promo_and_a_purchase() -> Ledger:
    acct = Ledger(make_engine())
    acct.command(command("purchase", "buy", T0, amount=10 * CREDIT, cost_basis_micros=1))
    acct.command(command("promotion", "promo", T0, amount=50 * CREDIT, effective_at=T0 + 7 * DAY))
    return acct


def test_a_negative_adjustment_never_draws_a_grant_not_yet_in_effect() -> None:
    acct = _future_promo_and_a_purchase()
    assert acct.balance == 60 * CREDIT  # the balance counts the promo from its creation
    refused = acct.command(command("adjustment", "claw-1", T0 + 1, amount=-20 * CREDIT))
    assert isinstance(refused.rejection, InsufficientBalance)
    taken = acct.command(command("adjustment", "claw-2", T0 + 2, amount=-4 * CREDIT))
    assert taken.rejection is None
    (entry,) = taken.entries
    assert [(a.grant_id, a.amount) for a in entry.allocations] == [("buy", -4 * CREDIT)]


def test_usage_and_adjustments_draw_the_same_way() -> None:
    acct = _future_promo_and_a_purchase()
    used = acct.usage(text("e1", T0 + 3))
    assert [a.grant_id for a in used.entries[0].allocations] == ["buy"]


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), min_size=1, max_size=6),
    st.integers(0, 300),
    st.integers(0, 20),
)
def test_burn_draws_at_most_what_is_in_effect(
    grants: list[tuple[int, int]], need: int, now: int
) -> None:
    live = [Grant(f"g{i}", "purchase", r, 10, at, remaining=r) for i, (r, at) in enumerate(grants)]
    before = drawable(live, now)
    allocations, left = burn(live, need, now)
    drawn = -sum(a.amount for a in allocations)
    assert drawn == min(need, before) and left == need - drawn
    assert drawable(live, now) == before - drawn
    assert all(g.remaining >= 0 for g in live)
    assert all(
        g.effective_at <= now for g in live if (g.grant_id,) in {(a.grant_id,) for a in allocations}
    )
