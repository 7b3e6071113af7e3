"""``void_usage`` and ``amend_usage`` in the engine (metering/domain/corrections.py): property
and rule tests."""

from __future__ import annotations

from engine_testkit import (
    APR_1,
    CREDIT,
    DAY,
    PLANS,
    T0,
    Ledger,
    command,
    image,
    make_engine,
    text,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.domain import (
    CreditEngine,
    EngineConfig,
    EntryType,
    UsageEvent,
    conserved_balance,
    fold,
    price_book_from_text,
)
from metering.domain.state import AccountState

_PRICES = """versions:
  - version: "v1"
    effective_from: "2025-01-01T00:00:00Z"
    features:
      image_generation:
        '*': {images: 25}
"""


def _account(policy: str = "block") -> Ledger:
    """Starter plan (2,000 credits), a purchase and a promotion: three grants to burn."""
    acct = Ledger(make_engine())
    acct.command(
        command("assign_plan", "p", T0, plan_id="starter" if policy == "block" else "growth")
    )
    acct.command(command("purchase", "b", T0, amount=300 * CREDIT))
    acct.command(command("promotion", "pr", T0, amount=40 * CREDIT, expires_at=T0 + 20 * DAY))
    return acct


def _grants(acct: Ledger) -> dict[str, int]:
    live = {g.grant_id: g.remaining for g in acct.state.grants}
    return {**{g: 0 for g in acct.state.spent}, **live}


def _void(acct: Ledger, event_id: str, at: int, cid: str | None = None) -> list[str]:
    out = acct.command(command("void_usage", cid or f"void-{event_id}", at, event_id=event_id))
    return acct.types(out)


sizes = st.lists(st.integers(0, 4000), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(sizes=sizes)
def test_voiding_in_reverse_order_restores_every_grant_exactly(sizes: list[int]) -> None:
    acct = _account()
    before, balance = _grants(acct), acct.balance
    events = []
    for i, tokens in enumerate(sizes):
        event = UsageEvent(f"e{i}", "a1", "text_generation", {"input_tokens": tokens * 100}, T0 + i)
        acct.usage(event)
        events.append(event)
    for i, event in reversed(list(enumerate(events))):
        _void(acct, event.event_id, T0 + 100 + i)
    assert acct.balance == balance
    assert {g: r for g, r in _grants(acct).items() if r or g in before} == before
    assert conserved_balance(acct.entries) == acct.balance


@settings(max_examples=100, deadline=None)
@given(sizes=sizes, pick=st.integers(0, 100))
def test_void_then_charge_the_same_units_again_gives_the_same_balance(
    sizes: list[int], pick: int
) -> None:
    acct = _account()
    for i, tokens in enumerate(sizes):
        acct.usage(UsageEvent(f"e{i}", "a1", "text_generation", {"requests": 1 + tokens}, T0 + i))
    balance = acct.balance
    victim = f"e{pick % len(sizes)}"
    units = {"requests": 1 + sizes[pick % len(sizes)]}
    charged = [e for e in acct.entries if e.cause_id == victim and e.type is EntryType.USAGE_DEBIT]
    _void(acct, victim, T0 + 50)
    assert acct.balance == balance - sum(e.amount for e in charged)
    acct.usage(UsageEvent("again", "a1", "text_generation", units, T0 + 51))
    assert acct.balance == balance


def test_the_voided_event_stays_a_duplicate_and_a_second_void_is_refused() -> None:
    acct = _account()
    acct.usage(image("i1", T0 + 1))
    balance = acct.balance
    assert _void(acct, "i1", T0 + 2) == ["USAGE_REVERSED"]
    assert acct.balance == balance + 25 * CREDIT
    assert acct.usage(image("i1", T0 + 3)).duplicate
    assert _void(acct, "i1", T0 + 4, "again") == ["COMMAND_REJECTED"]
    assert "already_voided" in (acct.entries[-1].reason or "")
    assert _void(acct, "never-sent", T0 + 5) == ["COMMAND_REJECTED"]
    assert "unknown_event" in (acct.entries[-1].reason or "")
    assert _void(acct, "i1", T0 + 6) == []  # the same void command again: idempotent


def test_corrections_are_remembered_by_the_charge_memory_not_the_state() -> None:
    """A busy account may send a correction per failed model call: the ids of those commands
    are remembered by the charge memory (the processor's id store), not among the state's
    command ids, and a re-sent correction is a duplicate, before and after a state reload."""
    acct = _account()
    commands = set(acct.state.commands)
    for i in range(40):
        acct.usage(image(f"i{i}", T0 + 1 + i))
    for i in range(40):
        kind = "void_usage" if i % 2 else "amend_usage"
        fields = {"units": {"images": 2}} if kind == "amend_usage" else {}
        acct.command(command(kind, f"fix-{i}", T0 + 100 + i, event_id=f"i{i}", **fields))
    assert acct.state.commands == commands
    assert _void(acct, "i1", T0 + 200, "fix-1") == []  # the same command id again
    acct.state = AccountState.from_bytes(acct.state.to_bytes(), acct.engine.config)
    assert _void(acct, "i2", T0 + 201, "fix-2") == []  # still remembered after a reload
    assert _void(acct, "i1", T0 + 202, "fix-1b") == ["COMMAND_REJECTED"]  # voided before


def test_a_correction_sent_again_after_the_window_is_still_a_duplicate() -> None:
    """Past the idempotency window the charge is forgotten, the correction's id is not: a
    command id applies at most once for as long as the ledger is kept (no entry repeats)."""
    window = 2 * DAY
    acct = Ledger(make_engine(dedupe_window_ms=window))
    acct.command(command("purchase", "b", T0, amount=300 * CREDIT))
    acct.usage(image("i1", T0 + 1))
    assert _void(acct, "i1", T0 + 2, "fix") == ["USAGE_REVERSED"]
    assert _void(acct, "i1", T0 + 3, "refused") == ["COMMAND_REJECTED"]
    acct.usage(image("later", T0 + 3 * window))  # the clock moves past the window
    entries = len(acct.entries)
    for cid in ("fix", "refused"):
        again = acct.command(command("void_usage", cid, T0 + 3 * window + 1, event_id="i1"))
        assert again.duplicate and not again.entries
    assert len(acct.entries) == entries
    assert _void(acct, "i1", T0 + 3 * window + 2, "new") == ["COMMAND_REJECTED"]  # forgotten
    assert "unknown_event" in (acct.entries[-1].reason or "")


def test_a_used_up_purchase_is_refilled_not_turned_into_a_correction() -> None:
    acct = Ledger(make_engine())
    acct.command(command("purchase", "b", T0, amount=25 * CREDIT))
    acct.usage(image("i1", T0 + 1))  # spends the whole purchase
    acct.command(command("purchase", "b2", T0 + 2, amount=CREDIT))  # a refresh drops "b"
    assert "b" in acct.state.spent and acct.state.grant("b") is None
    _void(acct, "i1", T0 + 3)
    reversed_entry = acct.entries[-1]
    assert reversed_entry.grant is None
    assert acct.state.grant("b") is not None and acct.state.grant("b").remaining == 25 * CREDIT
    assert acct.balance == 26 * CREDIT and not acct.state.spent


def test_credits_of_an_expired_grant_come_back_until_the_period_ends() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="starter"))
    acct.command(command("promotion", "pr", T0, amount=25 * CREDIT, expires_at=T0 + DAY))
    acct.usage(image("i1", T0 + 1))  # from the promotion (it burns first)
    acct.sweep(T0 + 2 * DAY)  # the promotion expires
    _void(acct, "i1", T0 + 2 * DAY + 1)
    entry = acct.entries[-1]
    assert entry.type is EntryType.USAGE_REVERSED and entry.grant is not None
    assert entry.grant.source == "correction" and entry.grant.amount == 25 * CREDIT
    assert entry.grant.expires_at == acct.state.period_end == APR_1
    assert entry.occurred_at == T0 + 1 and entry.feature == "image_generation"


def test_overage_is_reversed_in_its_own_period_only() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="growth"))  # overage allowed
    acct.command(command("adjustment", "adj", T0, amount=-10_000 * CREDIT))  # plan used up
    acct.usage(image("i1", T0 + 1))
    acct.usage(image("i2", T0 + 2))
    assert acct.state.overage == 50 * CREDIT
    _void(acct, "i1", T0 + 3)
    assert acct.state.overage == 25 * CREDIT and acct.entries[-1].amount == 25 * CREDIT
    acct.usage(text("may", APR_1 + 1))  # a new period: the overage counter starts again
    overage = acct.state.overage
    _void(acct, "i2", APR_1 + 2)  # March's overage: credited to March, April's stays
    assert acct.state.overage == overage
    entry = acct.entries[-1]
    assert entry.amount == 25 * CREDIT and entry.period_end == APR_1
    assert fold(acct.entries) == acct.state.view()


# == amend_usage ==================================================================================


def _amend(
    acct: Ledger, event_id: str, units: dict[str, int], at: int, cid: str | None = None
) -> list[str]:
    cmd = command(
        "amend_usage", cid or f"amend-{event_id}-{at}", at, event_id=event_id, units=units
    )
    return acct.types(acct.command(cmd))


def test_an_amend_gives_the_charge_back_and_charges_the_new_units_linked_to_the_event() -> None:
    acct = _account()
    acct.usage(UsageEvent("i1", "a1", "image_generation", {"images": 4}, T0 + 1, subject="u7"))
    balance = acct.balance
    assert _amend(acct, "i1", {"images": 1}, T0 + 2, "fix") == ["USAGE_REVERSED", "USAGE_DEBIT"]
    assert acct.balance == balance + 75 * CREDIT
    reversal, debit = acct.entries[-2:]
    assert reversal.entry_id == "fix:USAGE_REVERSED:i1" and reversal.amount == 100 * CREDIT
    assert debit.entry_id == "fix:USAGE_DEBIT:i1" and debit.cause_id == "i1"
    assert debit.amount == -25 * CREDIT and debit.reason == "amended"
    assert (debit.occurred_at, debit.subject, debit.feature) == (T0 + 1, "u7", "image_generation")
    assert debit.price_version == "2025-01"
    assert acct.usage(image("i1", T0 + 3)).duplicate  # the event is still remembered
    assert conserved_balance(acct.entries) == acct.balance


def test_an_amend_may_cost_more_and_then_a_void_gives_back_the_amended_charge() -> None:
    acct = _account()
    balance = acct.balance
    acct.usage(image("i1", T0 + 1))
    assert _amend(acct, "i1", {"images": 3}, T0 + 2) == ["USAGE_REVERSED", "USAGE_DEBIT"]
    assert acct.balance == balance - 75 * CREDIT
    assert _amend(acct, "i1", {"images": 2}, T0 + 3) == ["USAGE_REVERSED", "USAGE_DEBIT"]
    assert acct.entries[-2].amount == 75 * CREDIT  # the second amend reverses the first
    assert acct.balance == balance - 50 * CREDIT
    assert _void(acct, "i1", T0 + 4) == ["USAGE_REVERSED"]
    assert acct.balance == balance
    assert _amend(acct, "i1", {"images": 1}, T0 + 5) == ["COMMAND_REJECTED"]
    assert "already_voided" in (acct.entries[-1].reason or "")


def test_an_amend_is_priced_by_the_price_version_of_the_events_own_time() -> None:
    later = (T0 + 5 * DAY) // 1000
    book = price_book_from_text(
        _PRICES + f'  - version: "v2"\n    effective_from: {later}000\n'
        "    features:\n      image_generation:\n        '*': {images: 40}\n"
    )
    acct = Ledger(CreditEngine(book, PLANS, EngineConfig(charge_window=True)))
    acct.command(command("purchase", "b", T0, amount=1000 * CREDIT))
    acct.usage(image("i1", T0 + 1))
    assert acct.entries[-1].amount == -25 * CREDIT
    _amend(acct, "i1", {"images": 2}, T0 + 6 * DAY)  # the new prices are in effect by now
    assert acct.entries[-1].amount == -50 * CREDIT and acct.entries[-1].price_version == "v1"


def test_an_amend_that_cannot_be_paid_or_priced_is_refused_and_changes_nothing() -> None:
    acct = Ledger(make_engine())
    acct.command(command("purchase", "b", T0, amount=30 * CREDIT))
    acct.usage(image("i1", T0 + 1))
    state = acct.state.to_bytes()
    assert _amend(acct, "i1", {"images": 2}, T0 + 2) == ["COMMAND_REJECTED"]
    assert "insufficient_balance" in (acct.entries[-1].reason or "")
    assert _amend(acct, "i1", {"pixels": 2}, T0 + 3) == ["COMMAND_REJECTED"]
    assert "pricing_error" in (acct.entries[-1].reason or "")
    assert _amend(acct, "nope", {"images": 1}, T0 + 4) == ["COMMAND_REJECTED"]
    assert "unknown_event" in (acct.entries[-1].reason or "")
    after = acct.engine.load_state(acct.state.to_bytes())
    before = acct.engine.load_state(state)
    assert (after.balance, after.view().grants) == (before.balance, before.view().grants)


def test_an_amend_beyond_the_credits_goes_to_overage_in_the_events_period() -> None:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="growth"))  # overage up to 5,000
    acct.command(command("adjustment", "adj", T0, amount=-9_990 * CREDIT))  # 10 credits left
    acct.usage(text("t1", T0 + 1))
    assert _amend(acct, "t1", {"requests": 30}, T0 + 2) == [
        "USAGE_REVERSED",
        "USAGE_DEBIT",
        "OVERAGE",
    ]
    assert acct.state.overage == 20 * CREDIT and acct.balance == 0
    acct.usage(text("may", APR_1 + 1))  # April: March's overage is billed and stays
    acct.command(command("adjustment", "adj2", APR_1 + 1, amount=-9_999 * CREDIT))
    overage = acct.state.overage
    assert _amend(acct, "t1", {"requests": 15}, APR_1 + 2) == [
        "USAGE_REVERSED",
        "USAGE_DEBIT",
        "OVERAGE",
    ]
    # March is credited its 20 credits of overage, and its 10 from the plan come back as a
    # correction grant (March's plan grant is gone). The amend draws those 10 and its other 5
    # count as overage now, as late usage does.
    reversal, debit, over = acct.entries[-3:]
    assert reversal.amount == 30 * CREDIT and reversal.period_end == APR_1
    assert debit.allocations == (("correction:t1", -10 * CREDIT),)
    assert over.amount == -5 * CREDIT and over.period_end == APR_1
    assert acct.state.overage == overage + 5 * CREDIT
    assert fold(acct.entries) == acct.state.view()


def test_a_zero_amend_keeps_the_event_accepted_at_no_cost() -> None:
    acct = _account()
    balance = acct.balance
    acct.usage(image("i1", T0 + 1))
    assert _amend(acct, "i1", {"images": 0}, T0 + 2) == ["USAGE_REVERSED", "USAGE_DEBIT"]
    assert acct.entries[-1].amount == 0 and acct.balance == balance


@settings(max_examples=100, deadline=None)
@given(sizes=sizes, pick=st.integers(0, 100), new=st.integers(0, 4000))
def test_amending_equals_voiding_then_charging_the_new_units(
    sizes: list[int], pick: int, new: int
) -> None:
    amended, voided = _account(), _account()
    for acct in (amended, voided):
        for i, tokens in enumerate(sizes):
            units = {"requests": 1 + tokens}
            acct.usage(UsageEvent(f"e{i}", "a1", "text_generation", units, T0 + i))
    victim = f"e{pick % len(sizes)}"
    done = _amend(amended, victim, {"requests": new}, T0 + 50)
    voided_done = _void(voided, victim, T0 + 50)
    again = voided.usage(UsageEvent("again", "a1", "text_generation", {"requests": new}, T0 + 50))
    reason = amended.entries[-1].reason or ""
    if reason.startswith("unknown_event"):  # the victim was blocked: never charged, so
        assert voided_done == ["COMMAND_REJECTED"]  # neither correction has anything to undo
        assert voided.entries[-2].reason == reason
        charged = {"USAGE_DEBIT", "OVERAGE"}
        assert victim not in {e.cause_id for e in amended.entries if e.type.value in charged}
    elif done == ["COMMAND_REJECTED"]:  # all or nothing: only when the new units cannot be paid
        assert again.rejection is not None and again.rejection.code == "blocked"
    else:
        assert again.rejection is None and amended.balance == voided.balance
    assert conserved_balance(amended.entries) == amended.balance
