"""The reversal rule (metering/domain/reversal.py), over random grants and burns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metering.domain.grants import Grant, burn
from metering.domain.records import Allocation
from metering.domain.reversal import Charge, correction_grant_id, reverse

NOW = 1_800_000_000_000
PERIOD = (NOW - 10 * 86_400_000, NOW + 20 * 86_400_000)

grant_specs = st.lists(
    st.tuples(st.integers(1, 10**9), st.integers(0, 9), st.booleans()), min_size=1, max_size=8
)


def make_grants(specs: list[tuple[int, int, bool]]) -> list[Grant]:
    grants = [
        Grant(
            f"g{i}", "purchase", amount, priority, NOW - 1, NOW + 86_400_000 if expiring else None
        )
        for i, (amount, priority, expiring) in enumerate(specs)
    ]
    return sorted(grants, key=Grant.burn_key)


def charged(grants: list[Grant], need: int, overage: int = 0) -> Charge:
    allocations, _ = burn(grants, need, NOW)
    return Charge("ev-1", NOW, PERIOD[0], tuple(allocations), overage)


@given(specs=grant_specs, share=st.floats(0, 1.5))
def test_voiding_while_every_grant_is_live_restores_every_remaining_exactly(
    specs: list[tuple[int, int, bool]], share: float
) -> None:
    grants = make_grants(specs)
    before = {g.grant_id: g.remaining for g in grants}
    charge = charged(grants, int(sum(before.values()) * share))
    reversal = reverse(
        charge, grants, at=NOW, period_start=PERIOD[0], period_end=PERIOD[1], priority=0
    )
    assert {g.grant_id: g.remaining for g in grants} == before
    assert reversal.correction is None
    assert reversal.total == charge.debit


@given(specs=grant_specs, share=st.floats(0, 1.0), gone=st.sets(st.integers(0, 7)))
def test_parts_of_gone_grants_come_back_as_one_correction_grant_until_the_period_ends(
    specs: list[tuple[int, int, bool]], share: float, gone: set[int]
) -> None:
    grants = make_grants(specs)
    charge = charged(grants, int(sum(g.remaining for g in grants) * share))
    live = [g for g in grants if int(g.grant_id[1:]) not in gone]
    before = {g.grant_id: g.remaining for g in live}
    reversal = reverse(
        charge, live, at=NOW, period_start=PERIOD[0], period_end=PERIOD[1], priority=0
    )

    assert reversal.total == charge.debit  # nothing lost, nothing made up
    drawn = {a.grant_id: -a.amount for a in charge.allocations}
    for g in live:
        assert g.remaining == before[g.grant_id] + drawn.get(g.grant_id, 0) <= g.amount
    lost = sum(part for gid, part in drawn.items() if gid not in before)
    if lost:
        assert reversal.correction is not None
        assert reversal.correction.grant_id == correction_grant_id("ev-1")
        assert reversal.correction.amount == reversal.correction.remaining == lost
        assert reversal.correction.expires_at == PERIOD[1]
    else:
        assert reversal.correction is None


def test_a_grant_past_its_expiry_counts_as_gone() -> None:
    grants = [Grant("g0", "promotion", 100, 0, NOW - 1, NOW + 10)]
    charge = Charge("ev-1", NOW, PERIOD[0], (Allocation("g0", -40),), 0)
    reversal = reverse(
        charge, grants, at=NOW + 10, period_start=PERIOD[0], period_end=PERIOD[1], priority=0
    )
    assert reversal.returned == () and reversal.correction is not None
    assert grants[0].remaining == 100 and reversal.correction.amount == 40


@given(overage=st.integers(1, 10**9))
def test_overage_is_reversed_against_its_own_period(overage: int) -> None:
    charge = Charge("ev-1", NOW, PERIOD[0], (), overage)
    now = reverse(charge, [], at=NOW, period_start=PERIOD[0], period_end=PERIOD[1], priority=0)
    assert now.overage_now == now.overage_reversed == overage
    later = reverse(
        charge, [], at=NOW, period_start=PERIOD[1], period_end=PERIOD[1] + 1, priority=0
    )
    assert later.overage_now == 0 and later.overage_reversed == overage
