"""catch_up: a snapshot plus the ledger's tail gives back the engine's state.

Random histories (the engine property tests' operations) are run twice: to a random cut, which
gives the snapshot, and to the end, which gives the ledger. Catching the snapshot (or a new
state: a fold from the start) up with the ledger must give the state the engine holds, for
everything the ledger carries (see ``metering.domain.catch_up``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from engine_testkit import make_engine, text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_properties import ACCOUNTS, Op, Run, configs, ops_strategy

from metering.domain import (
    AccountState,
    CommandKind,
    CreditEngine,
    EntryType,
    LedgerError,
    catch_up,
)
from metering.domain.charges import ChargeWindow
from metering.domain.state import command_key


def _carried(state: AccountState) -> dict[str, Any]:
    """What the ledger determines about a state (catch_up restores exactly this)."""
    terms = state.terms
    plan_grant = state.grant(state.plan_grant_id) if state.plan_grant_id else None
    return {
        "view": state.view(),
        "periods": (state.prev_period_start, state.period_start, state.period_end),
        "published": terms.published()._replace(features=None),
        "rules": (terms.anchor_day, terms.rollover_cap, terms.alert_thresholds),
        # A spent grant waits for the engine's next refresh: it is gone all the same.
        "grants": [g.to_json()[:8] for g in state.grants if g.remaining or g is plan_grant],
        "plan_grant": state.plan_grant_id,
        "period_used": state.period_used,
        "plan_carry": state.plan_carry,
        "alerted": state.alerted,
    }


def _caught_up(engine: CreditEngine, snapshot: AccountState, run: Run, account: str) -> Any:
    state = engine.load_state(snapshot.to_bytes())
    done = catch_up(state, run.entries[account], engine.config, engine.plans)
    tail = [e for e in run.entries[account] if e.seq > snapshot.seq]
    assert done.applied == len(tail)
    usage = {e.cause_id for e in tail if e.type.value.startswith(("USAGE_DEBIT", "OVERAGE"))}
    assert usage <= {event_id for event_id, _ in done.event_ids}
    # Corrections that gave a charge back are returned for the id store, not kept in the state.
    corrections = {e.cause_id for e in tail if e.type is EntryType.USAGE_REVERSED}
    assert corrections == {command_id for command_id, _ in done.corrections}
    assert not {command_key(c) for c in corrections} & (state.commands - snapshot.commands)
    return state


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=ops_strategy, config=configs, cut=st.integers(0, 60))
def test_snapshot_plus_ledger_tail_is_the_engine_state(
    ops: list[Op], config: dict[str, Any], cut: int
) -> None:
    engine = make_engine(**config)
    whole = Run(engine)
    whole.apply(ops)
    prefix = Run(make_engine(**config))
    prefix.apply(ops[: min(cut, len(ops))])
    for account in ACCOUNTS:
        expected = whole.states[account]
        for snapshot in (prefix.states[account], engine.new_state(account)):
            rebuilt = _caught_up(engine, snapshot, whole, account)
            assert _carried(rebuilt) == _carried(expected)
            # A command the engine remembers is remembered after the rebuild: in the state, or
            # (a correction, for the window) with the charges: the snapshot's, or returned for
            # the id store (_caught_up).
            ledger = whole.entries[account]
            returned = {
                e.cause_id
                for e in ledger
                if e.seq > snapshot.seq and e.type is EntryType.USAGE_REVERSED
            }
            for cause in {e.cause_id for e in ledger if re.fullmatch(r"c\d+", e.cause_id)}:
                key = command_key(cause)
                if key in expected.commands or expected.charges.corrected(cause):
                    assert (
                        key in rebuilt.commands
                        or rebuilt.charges.corrected(cause)
                        or cause in returned
                    ), cause
        from_nothing = rebuilt  # the last one: rebuilt from a new state
        # Corrections need the charges: the ledger alone gives back every one the engine still
        # remembers, voids and amends included (forgetting old ones is the id store's job).
        remembered = _charges(expected)
        rebuilt_charges = _charges(from_nothing)
        assert {e: rebuilt_charges.get(e) for e in remembered} == remembered


def _charges(state: AccountState) -> dict[str, Any]:
    window = state.charges
    assert isinstance(window, ChargeWindow)
    out = {}
    for event_id, _ in window.to_json():
        record = window.get(event_id)
        assert record is not None
        out[event_id] = (record.charge, record.period_end, record.voided)
    return out


@settings(max_examples=40, deadline=None)
@given(ops=ops_strategy)
def test_rebuilt_account_continues_the_ledger(ops: list[Op]) -> None:
    """The next usage event after a rebuild gets the next seq and the same charge."""
    engine = make_engine()
    run = Run(engine)
    run.apply(ops)
    for account in ACCOUNTS:
        rebuilt = _caught_up(engine, engine.new_state(account), run, account)
        state = run.states[account]
        at = max(state.clock, rebuilt.clock) + 1
        event = text(f"next-{account}", at, account=account)
        expected = engine.apply_usage(state, event, at).entries
        got = engine.apply_usage(rebuilt, event, at).entries
        assert [(e.seq, e.type, e.amount, e.balance_after) for e in got] == [
            (e.seq, e.type, e.amount, e.balance_after) for e in expected
        ]


def test_a_gap_or_a_broken_chain_is_refused_and_the_state_is_untouched() -> None:
    engine = make_engine()
    run = Run(engine)
    run.apply([("command", "a", CommandKind.ASSIGN_PLAN, 0, None, "starter", 0, 0)])
    entries = run.entries["a"]
    assert entries
    state = engine.new_state("a")
    before = state.to_bytes()
    with pytest.raises(LedgerError):
        catch_up(state, entries[1:], engine.config, engine.plans)  # starts at seq 2
    broken = [entries[0]._replace(balance_after=entries[0].balance_after + 1), *entries[1:]]
    with pytest.raises(LedgerError):
        catch_up(state, broken, engine.config, engine.plans)
    assert state.to_bytes() == before
