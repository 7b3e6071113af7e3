"""The product's own scenarios (issue 3), written as examples against the shipped data."""

from __future__ import annotations

from engine_testkit import (
    APR_1,
    CREDIT,
    DAY,
    HOUR,
    MAY_1,
    T0,
    Ledger,
    command,
    image,
    make_engine,
    text,
)

from metering.domain import (
    AccountOverride,
    AlertKind,
    AutoTopupConfig,
    EntryType,
    FeatureNotInPlan,
    TopupNotAllowed,
    UsageBlocked,
    UsageEvent,
    conserved_balance,
)
from metering.domain.periods import parse_instant


def test_twenty_dollars_drain_to_zero_then_the_next_request_is_blocked() -> None:
    # No plan: hard limit. $20 buys 2,000 credits at $0.01 per credit = 80 images.
    acct = Ledger(make_engine())
    acct.command(
        command("purchase", "buy-20", T0, amount=2000 * CREDIT, cost_basis_micros=10_000,
                currency="USD")
    )  # fmt: skip
    assert acct.balance == 2000 * CREDIT
    created = acct.entries[-1]
    assert created.grant is not None and created.grant.cost_basis_micros == 10_000

    for i in range(80):
        out = acct.usage(image(f"img-{i}", T0 + 1000 + i))
        assert out.rejection is None
    assert acct.balance == 0
    assert [a.kind for a in out.alerts] == [AlertKind.BALANCE_EXHAUSTED]

    blocked = acct.usage(image("img-80", T0 + 5000))
    assert isinstance(blocked.rejection, UsageBlocked)
    assert acct.types(blocked) == ["USAGE_REJECTED"]
    assert blocked.entries[0].amount == -25 * CREDIT
    assert blocked.entries[0].balance_after == 0
    assert acct.balance == 0


def test_an_image_costs_25_credits_and_a_text_request_1() -> None:
    engine = make_engine()
    assert engine.price(image("i", T0)) == (25 * CREDIT, "2025-01")
    assert engine.price(text("t", T0)) == (1 * CREDIT, "2025-01")
    acct = Ledger(engine)
    acct.command(command("grant", "g", T0, amount=100 * CREDIT, grant_source="promotion"))
    acct.usage(image("i", T0 + 1))
    acct.usage(text("t", T0 + 2))
    assert acct.balance == 74 * CREDIT
    debits = [e for e in acct.entries if e.type is EntryType.USAGE_DEBIT]
    assert [e.amount for e in debits] == [-25 * CREDIT, -1 * CREDIT]
    assert all(e.price_version == "2025-01" for e in debits)


def test_up_to_one_month_of_unused_credits_roll_over() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="starter"))  # 2,000 a month
    for i in range(20):
        acct.usage(image(f"i{i}", T0 + i))  # 500 credits used
    out = acct.usage(text("april", APR_1 + HOUR))
    types = acct.types(out)
    assert types == ["GRANT_EXPIRED", "PERIOD_RESET", "ROLLOVER", "GRANT_CREATED", "USAGE_DEBIT"]
    rollover = out.entries[2]
    assert rollover.amount == 1500 * CREDIT
    assert rollover.grant is not None and rollover.grant.expires_at == MAY_1
    # Rollover (priority 20) burns before April's plan grant (30).
    assert out.entries[-1].allocations[0].grant_id == rollover.grant.grant_id
    assert acct.balance == (1500 + 2000 - 1) * CREDIT

    # Nothing used in April: only the plan grant's 2,000 roll over (capped at one month),
    # the old rollover expires unused.
    out = acct.sweep(MAY_1)
    by_type = {e.type: e for e in out.entries}
    assert by_type[EntryType.ROLLOVER].amount == 2000 * CREDIT
    assert acct.balance == 4000 * CREDIT


def test_rollover_cap_limits_what_carries_over() -> None:
    plans = """
plans:
  capped: {monthly_credits: 1000, rollover: {cap: 200}, overage: {policy: block}}
"""
    acct = Ledger(make_engine(plans))
    acct.command(command("assign_plan", "p", T0, plan_id="capped"))
    out = acct.sweep(APR_1)
    assert [e.amount for e in out.entries if e.type is EntryType.ROLLOVER] == [200 * CREDIT]
    assert acct.balance == 1200 * CREDIT


def test_a_prepaid_bundle_is_used_across_months_and_expires_on_time() -> None:
    engine = make_engine(expiring_notice_ms=7 * DAY)
    acct = Ledger(engine)
    acct.command(command("assign_plan", "p", T0, plan_id="starter"))
    expires = parse_instant("2025-06-15T00:00:00Z")
    acct.command(
        command("purchase", "bundle", T0, amount=5000 * CREDIT, expires_at=expires,
                cost_basis_micros=8_000)
    )  # fmt: skip
    month_starts = [T0, APR_1 + DAY, MAY_1 + DAY, parse_instant("2025-06-02T00:00:00Z")]
    for m, start in enumerate(month_starts):
        # 100 images = 2,500 credits a month: the plan's 2,000 (+ rollover) then the bundle.
        for i in range(100):
            acct.usage(image(f"m{m}-{i}", start + i))
    bundle_drawn = -sum(
        a.amount for e in acct.entries if e.type is EntryType.USAGE_DEBIT
        for a in e.allocations if a.grant_id == "bundle"
    )  # fmt: skip
    assert 0 < bundle_drawn < 5000 * CREDIT  # used in several months, not exhausted

    notice = acct.sweep(expires - 7 * DAY)
    assert [a.kind for a in notice.alerts] == [AlertKind.GRANT_EXPIRING]
    assert notice.alerts[0].grant_id == "bundle"
    assert acct.sweep(expires - 1).entries == []

    out = acct.sweep(expires)  # an idle account: the sweep expires it on time
    assert acct.types(out) == ["GRANT_EXPIRED"]
    assert out.entries[0].amount == -(5000 * CREDIT - bundle_drawn)
    assert out.entries[0].occurred_at == expires
    assert acct.state.grant("bundle") is None


def test_the_free_plan_refuses_a_purchase() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="free"))
    before = acct.balance
    out = acct.command(command("purchase", "buy", T0 + 1, amount=1000 * CREDIT))
    assert isinstance(out.rejection, TopupNotAllowed)
    assert acct.types(out) == ["COMMAND_REJECTED"]
    assert out.entries[0].reason is not None and out.entries[0].reason.startswith("topup_not")
    assert acct.balance == before
    # The refusal is remembered like any processed command.
    assert acct.command(command("purchase", "buy", T0 + 2, amount=1000 * CREDIT)).duplicate


def test_enterprise_gets_a_custom_allocation_and_negotiated_overage() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="enterprise"))
    acct.command(
        command("set_override", "deal", T0 + 1, override=AccountOverride(
            monthly_credits=250_000 * CREDIT, overage_policy="allow",
            overage_limit=30 * CREDIT))
    )  # fmt: skip
    assert acct.entries[-1].type is EntryType.GRANT_CREATED
    assert acct.balance == 250_000 * CREDIT  # mid-period: the new allocation, nothing used yet
    terms = next(e.terms for e in acct.entries if e.type is EntryType.OVERRIDE_SET)
    assert terms is not None and terms.monthly_credits == 250_000 * CREDIT

    # Burn everything, then overage up to the negotiated 30 credits, then refusal.
    acct.command(command("adjustment", "burn", T0 + 2, amount=-250_000 * CREDIT))
    first = acct.usage(image("o1", T0 + 3))
    assert acct.types(first) == ["OVERAGE"] and first.entries[0].overage_after == 25 * CREDIT
    second = acct.usage(image("o2", T0 + 4))
    assert acct.types(second) == ["OVERAGE", "USAGE_REJECTED"]
    assert [e.amount for e in second.entries] == [-5 * CREDIT, -20 * CREDIT]
    assert isinstance(second.rejection, UsageBlocked)
    assert acct.state.overage == 30 * CREDIT

    # Next period: the custom allocation is granted again and the overage counter resets.
    out = acct.sweep(APR_1)
    grants = [e.amount for e in out.entries if e.type is EntryType.GRANT_CREATED]
    assert grants == [250_000 * CREDIT] and acct.state.overage == 0


def test_promotional_credits_burn_before_purchased_ones_when_priority_says_so() -> None:
    acct = Ledger(make_engine())
    acct.command(command("purchase", "paid", T0, amount=10 * CREDIT))
    acct.command(command("promotion", "promo", T0, amount=10 * CREDIT))
    out = acct.usage(image("i", T0 + 1))  # 25 credits: promo 10, then paid 10, then overage?
    assert [tuple(a) for a in out.entries[0].allocations] == [
        ("promo", -10 * CREDIT),
        ("paid", -10 * CREDIT),
    ]
    assert acct.types(out) == ["USAGE_DEBIT", "USAGE_REJECTED"]  # no plan: block the rest

    # Priorities are data: a promotion given a later priority burns after the purchase.
    acct2 = Ledger(make_engine())
    acct2.command(command("purchase", "paid", T0, amount=10 * CREDIT, priority=5))
    acct2.command(command("promotion", "promo", T0, amount=10 * CREDIT, priority=60))
    out = acct2.usage(text("t", T0 + 1))
    assert out.entries[0].allocations[0].grant_id == "paid"


def test_same_priority_burns_the_soonest_expiry_first_and_never_expiring_last() -> None:
    acct = Ledger(make_engine())
    acct.command(command("grant", "a", T0, amount=CREDIT, priority=1, grant_source="promotion"))
    acct.command(command("grant", "b", T0, amount=CREDIT, priority=1, grant_source="promotion",
                         expires_at=T0 + 9 * DAY))  # fmt: skip
    acct.command(command("grant", "c", T0, amount=CREDIT, priority=1, grant_source="promotion",
                         expires_at=T0 + 5 * DAY))  # fmt: skip
    order = [acct.usage(text(f"t{i}", T0 + i)).entries[0].allocations[0].grant_id for i in range(3)]
    assert order == ["c", "b", "a"]


def test_a_late_event_lands_in_the_closed_period_within_the_grace_window() -> None:
    acct = Ledger(make_engine(late_grace_ms=2 * HOUR))
    acct.command(command("assign_plan", "p", T0, plan_id="starter"))
    acct.usage(text("april", APR_1 + 10 * 60_000))  # closes March
    late = acct.usage(text("late", APR_1 - 60_000))  # from March 31, 23:59
    entry = late.entries[0]
    assert entry.period_end == APR_1 and entry.period_start == parse_instant("2025-03-01")
    assert entry.reason == "late"
    # The same lateness past the grace window goes to the open period, marked as such.
    acct.usage(text("now", APR_1 + 3 * HOUR))
    too_late = acct.usage(text("late2", APR_1 - 120_000)).entries[0]
    assert too_late.period_start == APR_1 and too_late.reason == "late_after_grace"


def test_a_duplicate_event_or_command_yields_no_entries() -> None:
    acct = Ledger(make_engine())
    acct.command(command("grant", "g", T0, amount=100 * CREDIT))
    first = acct.usage(text("e", T0 + 1))
    again = acct.usage(text("e", T0 + 2))
    assert first.entries and not first.duplicate
    assert again.duplicate and again.entries == [] and again.alerts == []
    assert acct.command(command("grant", "g", T0 + 3, amount=100 * CREDIT)).duplicate
    assert acct.balance == 99 * CREDIT


def test_an_event_older_than_the_dedupe_window_is_recorded_not_charged() -> None:
    acct = Ledger(make_engine(dedupe_window_ms=DAY, late_grace_ms=HOUR))
    acct.command(command("grant", "g", T0, amount=100 * CREDIT))
    acct.usage(text("old", T0 + 1))
    acct.usage(text("new", T0 + 3 * DAY))  # "old" leaves the window
    redelivered = acct.usage(text("old", T0 + 1))  # could be a duplicate: never charge twice
    assert acct.types(redelivered) == ["USAGE_REJECTED"]
    assert redelivered.entries[0].reason == "outside_dedupe_window"
    assert acct.balance == 98 * CREDIT


def test_mid_period_plan_change_keeps_what_was_used() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p1", T0, plan_id="starter"))  # 2,000
    for i in range(20):
        acct.usage(image(f"i{i}", T0 + i))  # 500 used
    out = acct.command(command("assign_plan", "p2", T0 + DAY, plan_id="growth"))  # 10,000
    assert acct.types(out) == ["PLAN_ASSIGNED", "GRANT_EXPIRED", "GRANT_CREATED"]
    assert out.entries[2].amount == (10_000 - 500) * CREDIT
    assert out.entries[2].grant is not None and out.entries[2].grant.expires_at == APR_1
    # Downgrade after using 2,500 in total: the period's allocation is already used up.
    acct.command(command("adjustment", "use", T0 + DAY + 1, amount=-2000 * CREDIT))
    out = acct.command(command("assign_plan", "p3", T0 + 2 * DAY, plan_id="starter"))
    assert acct.types(out) == ["PLAN_ASSIGNED", "GRANT_EXPIRED"]
    assert acct.balance == 0
    assert conserved_balance(acct.entries) == acct.balance


def test_thresholds_alert_once_per_threshold_per_period() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="starter"))  # 50/80/100 % of 2,000
    crossed = []
    for i in range(100):
        out = acct.usage(image(f"i{i}", T0 + i))
        crossed += [a.threshold_pct for a in out.alerts if a.kind is AlertKind.THRESHOLD_CROSSED]
    assert crossed == [50, 80, 100]
    out = acct.usage(image("april", APR_1 + 1))
    assert not [a for a in out.alerts if a.kind is AlertKind.THRESHOLD_CROSSED]


def test_a_feature_outside_the_plan_is_rejected_unless_on_trial() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="free"))  # no image_generation
    out = acct.usage(image("i1", T0 + 1))
    assert isinstance(out.rejection, FeatureNotInPlan)
    assert acct.types(out) == ["USAGE_REJECTED"]
    acct.command(
        command("set_override", "trial", T0 + 2, override=AccountOverride(
            trial_features=("image_generation",), trial_until=T0 + DAY))
    )  # fmt: skip
    assert acct.usage(image("i2", T0 + 3)).rejection is None
    assert isinstance(acct.usage(image("i3", T0 + 2 * DAY)).rejection, FeatureNotInPlan)


def test_auto_topup_requests_once_backs_off_after_decline_and_caps_per_window() -> None:
    engine = make_engine(topup_backoff_ms=HOUR)
    acct = Ledger(engine)
    acct.command(command("purchase", "seed", T0, amount=100 * CREDIT))
    cfg = AutoTopupConfig(enabled=True, threshold=50 * CREDIT, amount=500 * CREDIT,
                          max_requests=2, window_ms=DAY)  # fmt: skip
    acct.command(command("configure_auto_topup", "auto", T0, auto_topup=cfg))

    def requests(out_alerts: list) -> int:  # type: ignore[type-arg]
        return sum(a.kind is AlertKind.AUTO_TOPUP_REQUESTED for a in out_alerts)

    acct.usage(image("i1", T0 + 1))  # 75 left
    out = acct.usage(image("i2", T0 + 2))  # 50 left: not below
    assert requests(out.alerts) == 0
    out = acct.usage(text("t1", T0 + 3))  # 49: below -> one request
    assert requests(out.alerts) == 1 and out.alerts[-1].amount == 500 * CREDIT
    assert requests(acct.usage(text("t2", T0 + 4)).alerts) == 0  # pending

    acct.command(command("topup_declined", "no", T0 + 5))
    assert requests(acct.usage(text("t3", T0 + 6)).alerts) == 0  # backing off
    assert requests(acct.usage(text("t4", T0 + 5 + HOUR)).alerts) == 1  # second (max 2/day)
    acct.command(command("topup_declined", "no2", T0 + 6 + HOUR))
    assert requests(acct.usage(text("t5", T0 + 10 * HOUR)).alerts) == 0  # window is full
    # A purchase answers a request and clears the pending state.
    acct.command(command("purchase", "paid", T0 + DAY + 7 * HOUR, amount=500 * CREDIT))
    assert acct.balance > 50 * CREDIT


def test_void_and_negative_adjustment() -> None:
    acct = Ledger(make_engine())
    acct.command(command("promotion", "promo", T0, amount=10 * CREDIT))
    acct.command(command("purchase", "paid", T0, amount=10 * CREDIT))
    out = acct.command(command("void_grant", "v", T0 + 1, grant_id="promo"))
    assert acct.types(out) == ["GRANT_VOIDED"] and out.entries[0].amount == -10 * CREDIT
    assert acct.command(command("void_grant", "v2", T0 + 1, grant_id="promo")).rejection
    refused = acct.command(command("adjustment", "big", T0 + 2, amount=-11 * CREDIT))
    assert refused.rejection is not None and acct.balance == 10 * CREDIT
    acct.command(command("adjustment", "fix", T0 + 2, amount=-4 * CREDIT))
    acct.command(command("adjustment", "credit", T0 + 2, amount=3 * CREDIT))
    assert acct.balance == 9 * CREDIT == conserved_balance(acct.entries)


def test_reservation_id_is_copied_onto_the_debit() -> None:
    acct = Ledger(make_engine())
    acct.command(command("grant", "g", T0, amount=10 * CREDIT))
    out = acct.usage(
        UsageEvent("e", "a1", "image_generation", {"images": 1}, T0 + 1, reservation_id="r-1")
    )
    assert [e.reservation_id for e in out.entries] == ["r-1", None]  # debit then rejected part


def test_default_plan_is_given_on_first_touch() -> None:
    acct = Ledger(make_engine(default_plan="free"))
    out = acct.usage(text("first", T0))
    assert acct.types(out) == ["PLAN_ASSIGNED", "GRANT_CREATED", "USAGE_DEBIT"]
    assert acct.balance == 99 * CREDIT
