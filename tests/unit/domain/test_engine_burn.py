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


def test_the_hot_path_builds_usage_debits_field_by_field_right() -> None:
    """apply_usage builds USAGE_DEBIT entries positionally (tuple.__new__, for speed): this
    pins every field to its name, so a reordered LedgerEntry cannot shift them silently."""
    from metering.domain import EntryType, LedgerEntry, UsageEvent

    acct = Ledger(make_engine())
    acct.command(command("purchase", "buy", T0, amount=10 * CREDIT, cost_basis_micros=1))
    event = UsageEvent(
        "e-1",
        "a1",
        "text_generation",
        {"requests": 1},
        T0 + 5,
        subject="team-x",
        model="gpt-4o",
        reservation_id="hold-1",
    )
    (debit,) = acct.usage(event).entries
    state = acct.state
    expected = LedgerEntry(
        entry_id="e-1:USAGE_DEBIT",
        account_id="a1",
        seq=state.seq,
        type=EntryType.USAGE_DEBIT,
        amount=debit.amount,
        allocations=(("buy", debit.amount),),  # type: ignore[arg-type]
        balance_after=state.balance,
        overage_after=0,
        cause_id="e-1",
        occurred_at=T0 + 5,
        recorded_at=T0 + 5,
        period_start=state.period_start,
        period_end=state.period_end,
        subject="team-x",
        feature="text_generation",
        model="gpt-4o",
        price_version=debit.price_version,
        reason=None,
        reservation_id="hold-1",
        grant=None,
        terms=None,
    )
    assert debit == expected and debit.amount < 0 and debit.price_version
