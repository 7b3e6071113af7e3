"""An account's next alert threshold: ``Terms.threshold_amount`` is one of ``threshold_amounts``."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from metering.domain import load_plans
from metering.domain.plans import resolve_terms

PLANS = load_plans()


@given(
    plan_id=st.sampled_from(sorted(PLANS.plans)),
    monthly=st.integers(min_value=-5, max_value=10**13),
    thresholds=st.lists(st.integers(min_value=1, max_value=200), max_size=5),
    index=st.integers(min_value=0, max_value=6),
)
def test_the_next_threshold_is_the_one_the_list_names(
    plan_id: str, monthly: int, thresholds: list[int], index: int
) -> None:
    terms = replace(
        resolve_terms(PLANS.plans[plan_id], None),
        monthly_credits=monthly,
        alert_thresholds=tuple(sorted(thresholds)),
    )
    amounts = terms.threshold_amounts()
    expected = amounts[index] if index < len(amounts) else None
    assert terms.threshold_amount(index) == expected
