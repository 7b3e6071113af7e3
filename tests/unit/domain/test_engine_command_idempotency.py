"""A command id applies at most once for as long as the ledger is kept (design invariant 2).

The black-box test re-sent a negative adjustment five days later and a purchase three weeks
later (after its grant was voided): both applied again. Each kind here is re-sent a week and
then five weeks of event time later, across a state round trip, and must change nothing.
"""

from __future__ import annotations

import pytest
from engine_testkit import CREDIT, DAY, T0, Ledger, command, make_engine, text

from metering.domain import AccountOverride, AutoTopupConfig, CreditCommand

WEEK = 7 * DAY

KINDS: list[CreditCommand] = [
    command("grant", "c-grant", T0 + 10, amount=5 * CREDIT, grant_source="promotion"),
    command("purchase", "c-buy", T0 + 10, amount=50 * CREDIT, cost_basis_micros=10_000,
            currency="USD"),
    command("promotion", "c-promo", T0 + 10, amount=3 * CREDIT),
    command("adjustment", "c-adj-minus", T0 + 10, amount=-2 * CREDIT, reason="refund"),
    command("adjustment", "c-adj-plus", T0 + 10, amount=2 * CREDIT, reason="goodwill"),
    command("void_grant", "c-void", T0 + 10, grant_id="seed-grant"),
    command("assign_plan", "c-plan", T0 + 10, plan_id="starter"),
    command("set_override", "c-override", T0 + 10,
            override=AccountOverride(monthly_credits=1234 * CREDIT)),
    command("configure_auto_topup", "c-topup", T0 + 10,
            auto_topup=AutoTopupConfig(enabled=True, threshold=CREDIT, amount=10 * CREDIT)),
    command("topup_declined", "c-declined", T0 + 10),
    command("void_usage", "c-void-usage", T0 + 10, event_id="seed-usage"),
    command("amend_usage", "c-amend-usage", T0 + 10, event_id="seed-usage",
            units={"requests": 3}),
    command("void_usage", "c-void-unknown", T0 + 10, event_id="never-sent"),  # refused
]  # fmt: skip


@pytest.mark.parametrize("original", KINDS, ids=lambda c: c.command_id)
def test_a_command_re_sent_weeks_later_changes_nothing(original: CreditCommand) -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "seed-plan", T0, plan_id="growth"))
    acct.command(command("grant", "seed-grant", T0 + 1, amount=100 * CREDIT,
                         grant_source="promotion", grant_id="seed-grant"))  # fmt: skip
    acct.usage(text("seed-usage", T0 + 2))
    acct.command(original)
    for days in (WEEK, 5 * WEEK):
        acct.usage(text(f"u-{days}", T0 + days))  # the account's clock moves on
        acct.state = acct.engine.load_state(acct.state.to_bytes())
        before = (acct.state.to_bytes(), len(acct.entries))
        again = acct.command(original._replace(issued_at=original.issued_at + days))
        assert again.duplicate, f"{original.kind.value} applied again after {days // DAY} days"
        assert not again.entries
        assert (acct.state.to_bytes(), len(acct.entries)) == before
    assert len({e.entry_id for e in acct.entries}) == len(acct.entries)


def test_a_purchase_re_sent_after_its_grant_was_voided_does_not_recreate_it() -> None:
    acct = Ledger(make_engine())
    buy = command("purchase", "buy-1", T0, amount=50 * CREDIT, cost_basis_micros=10_000,
                  currency="USD", grant_id="g-buy-1")  # fmt: skip
    acct.command(buy)
    acct.command(command("void_grant", "void-1", T0 + DAY, grant_id="g-buy-1"))
    assert acct.balance == 0
    again = acct.command(buy._replace(issued_at=T0 + 3 * WEEK))
    assert again.duplicate and not again.entries
    assert acct.balance == 0
