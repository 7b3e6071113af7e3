"""The demo's story, folded through the pure engine: every promised beat happens."""

from __future__ import annotations

from importlib.resources import files

from demo.report import credits
from demo.scenario import (
    DEMO_GROWTH_ROLLOVER_CAP,
    build_scenario,
    demo_plans_yaml,
    month_start,
)
from metering.domain import CreditEngine, EngineConfig, load_price_book
from metering.domain.loading import plans_from_text
from metering.domain.records import UsageEvent

NOW = 1_763_900_000_000  # 2025-11-23T12:13:20Z
MICRO = 1_000_000


def _play(now: int) -> tuple[dict[str, list], object]:  # type: ignore[type-arg]
    shipped = files("metering.data").joinpath("plans.yaml").read_text()
    engine = CreditEngine(
        load_price_book(None), plans_from_text(demo_plans_yaml(shipped)), EngineConfig()
    )
    scenario = build_scenario(now)
    states = {a.account_id: engine.new_state(a.account_id) for a in scenario.accounts}
    ledger: dict[str, list] = {a: [] for a in states}  # type: ignore[type-arg]
    for phase in scenario.phases:
        for c in phase.commands:
            out = engine.apply_command(states[c.account_id], c, now)
            ledger[c.account_id] += out.entries
        for e in phase.events:
            out = engine.apply_usage(states[e["account_id"]], UsageEvent.from_record(e), now)
            ledger[e["account_id"]] += out.entries
    return ledger, scenario


def test_story_beats() -> None:
    ledger, scenario = _play(NOW)
    types = {a: [e.type.value for e in es] for a, es in ledger.items()}
    for account, kinds in types.items():
        assert kinds.count("PERIOD_RESET") == 1, account  # the anchor is crossed once
    acme_rollover = [e.amount for e in ledger["acme"] if e.type.value == "ROLLOVER"]
    assert acme_rollover == [DEMO_GROWTH_ROLLOVER_CAP * MICRO]  # capped
    assert "ROLLOVER" not in types["initech"]  # free plan: no rollover
    assert ledger["initech"][-1].balance_after == 0
    assert "USAGE_REJECTED" in types["initech"]
    assert ledger["umbrella"][-1].overage_after > 0
    assert ledger["umbrella"][-1].overage_after <= 5_000 * MICRO
    sources = {e.grant.source for e in ledger["acme"] + ledger["globex"] if e.grant is not None}
    assert {"purchase", "promotion", "rollover", "plan"} <= sources
    assert scenario.dry_account == "initech"  # type: ignore[attr-defined]


def test_story_is_deterministic_and_time_ordered() -> None:
    a, b = build_scenario(NOW), build_scenario(NOW)
    assert a == b
    anchor = month_start(NOW)
    assert a.anchor == anchor and a.last_month_start == month_start(NOW, 1)
    for phase in a.phases:
        times = [e["occurred_at"] for e in phase.events]
        assert times == sorted(times) and all(t <= NOW for t in times)
    assert all(e["occurred_at"] < anchor for e in a.phases[1].events)
    assert all(e["occurred_at"] >= anchor for e in a.phases[2].events)
    ids = a.ids_by_account()
    assert sum(len(v) for v in ids.values()) == sum(p.size for p in a.phases)


def test_story_right_after_the_anchor_still_works() -> None:
    ledger, _ = _play(month_start(NOW) + 5_000)  # played at 00:00:05 on the 1st
    assert ledger["umbrella"][-1].overage_after > 0
    assert ledger["initech"][-1].balance_after == 0


def test_credits_formatting_is_exact() -> None:
    assert credits(1_234_567_890) == "1,234.56789"
    assert credits(-500_000) == "-0.5"
    assert credits(0) == "0"
    assert credits(None) == "unlimited"
    assert month_start(NOW, 11) == 1_733_011_200_000  # 2024-12-01
