"""Pure parts of the projection: key layout, entry compaction, fail modes, config parsing."""

from __future__ import annotations

import json

import pytest

from projections.apply import _plan, compact
from projections.enforcement import Decision, new_hold_id, parse_grant
from projections.failmode import FailMode, PolicyCache, degraded_decision
from projections.keys import (
    LayoutError,
    account_from_key,
    account_keys,
    balance_pattern,
    check_prefix,
    hold_account,
)
from projections.openapi import SPEC
from projections.scripts import SCRIPT_NAMES, script
from projections.sidecar import parse_api_keys


def test_all_keys_of_an_account_share_its_hash_tag() -> None:
    keys = account_keys("mt:", "acme:eu")
    assert keys.as_list() == [
        "mt:{acme:eu}:bal",
        "mt:{acme:eu}:grants",
        "mt:{acme:eu}:holds",
        "mt:{acme:eu}:holdx",
    ]
    assert {k[k.index("{") + 1 : k.index("}")] for k in keys.as_list()} == {"acme:eu"}
    assert account_from_key("mt:", keys.balance) == "acme:eu"
    assert account_from_key("other:", keys.balance) is None
    assert balance_pattern("a*b:") == "a\\*b:{*}:bal"
    with pytest.raises(LayoutError):
        check_prefix("x{y}:")


def test_hold_ids_name_their_account() -> None:
    hold = new_hold_id("acme:eu")
    assert hold_account(hold) == "acme:eu"
    for bad in ("", "abc", "x" * 32 + ":", "short:acme"):
        with pytest.raises(LayoutError):
            hold_account(bad)


def test_compact_is_positional_and_json_safe() -> None:
    entry = {
        "account_id": "a",
        "seq": 3,
        "type": "GRANT_CREATED",
        "amount": 5,
        "allocations": [{"grant_id": "g", "amount": 5}],
        "balance_after": 5,
        "overage_after": 0,
        "recorded_at": 10,
        "period_start": 1,
        "period_end": 2,
        "reservation_id": None,
        "grant": {
            "grant_id": "g",
            "source": "promotion",
            "amount": 5,
            "priority": 3,
            "effective_at": 9,
            "expires_at": None,
        },
        "terms": {
            "plan_id": "p",
            "overage_policy": "allow",
            "overage_limit": 7,
            "features": ["x", "y"],
            "monthly_credits": 100,
        },
    }
    row = compact(entry)
    assert row[:8] == [3, "GRANT_CREATED", 5, 5, 0, 10, 1, 2]
    assert row[8] == [["g", 5]] and row[9] is False
    assert row[10] == ["g", "promotion", 5, 3, 9, False]
    assert row[11] == ["p", "allow", 7, 100, '["x","y"]']
    assert json.loads(json.dumps(row)) == row
    entry["terms"]["features"] = None
    assert compact(entry)[11][4] == "*"


def test_plan_groups_by_account_in_seq_order() -> None:
    entries = [
        {"account_id": "a", "seq": 2},
        {"account_id": "b", "seq": 1},
        {"account_id": "a", "seq": 1},
    ]
    calls = _plan(entries)
    assert [(c.account, c.indexes) for c in calls] == [("a", [2, 0]), ("b", [1])]


def test_grant_values_round_trip() -> None:
    grant = parse_grant("g1", "7|10|2||1700|purchase|x")
    assert (grant.remaining, grant.amount, grant.priority, grant.expires_at) == (7, 10, 2, None)
    assert grant.source == "purchase|x"
    assert parse_grant("g", "0|1|0|99|5|plan").expires_at == 99


def test_fail_modes() -> None:
    cache = PolicyCache(max_size=2)
    cache.remember("allow-acct", "allow")
    cache.remember("block-acct", "block")
    assert degraded_decision(FailMode.AUTO, cache, "allow-acct").allowed
    assert not degraded_decision(FailMode.AUTO, cache, "block-acct").allowed
    assert not degraded_decision(FailMode.AUTO, cache, "unknown").allowed
    assert degraded_decision(FailMode.OPEN, cache, "block-acct").allowed
    closed = degraded_decision(FailMode.CLOSED, cache, "allow-acct")
    assert (closed.allowed, closed.degraded, closed.reason) == (
        False,
        True,
        "redis_unavailable_fail_closed",
    )
    cache.remember("third", "unlimited")
    assert cache.get("allow-acct") is None and len(cache) == 2  # LRU bound
    assert FailMode.parse(" Closed ") is FailMode.CLOSED
    with pytest.raises(ValueError):
        FailMode.parse("maybe")


def test_api_keys_parse() -> None:
    assert parse_api_keys("svcA:key1, svcB:key:2,") == {"svcA": "key1", "svcB": "key:2"}
    assert parse_api_keys("") == {}
    for bad in ("svcA", "svcA:", ":key"):
        with pytest.raises(ValueError):
            parse_api_keys(bad)


def test_decision_json_and_spec() -> None:
    decision = Decision(allowed=True, reason="ok", spendable=None)
    assert set(decision.to_json()) == set(Decision.__dataclass_fields__)
    json.dumps(SPEC)
    assert "/v1/reservations/{hold_id}/commit" in SPEC["paths"]


def test_scripts_load_from_package() -> None:
    for name in SCRIPT_NAMES:
        lua = script(name)
        assert len(lua.sha) == 40 and "redis.call" in lua.source
    assert "local function prune" not in script("apply").source  # standalone hot path
    assert "local function prune" in script("check").source
