"""Pure parts of the projection: key layout, entry encoding, fail modes, config parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from projections import projection_cli
from projections.apply import _plan, entry_args
from projections.balance import balance_from_reply, grant_listed, parse_grant
from projections.enforcement import Decision, new_hold_id
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


def _resp_args(packed: bytes) -> list[bytes]:
    """Decode a sequence of RESP bulk strings."""
    out, i = [], 0
    while i < len(packed):
        assert packed[i : i + 1] == b"$"
        j = packed.index(b"\r\n", i)
        n = int(packed[i + 1 : j])
        out.append(packed[j + 2 : j + 2 + n])
        assert packed[j + 2 + n : j + 4 + n] == b"\r\n"
        i = j + 4 + n
    return out


def test_entry_args_are_flat_and_positional() -> None:
    entry: dict[str, Any] = {
        "account_id": "a",
        "seq": 3,
        "type": "GRANT_CREATED",
        "amount": 5,
        "allocations": [{"grant_id": "g|1", "amount": 5}, {"grant_id": "h", "amount": -2}],
        "balance_after": 5,
        "overage_after": 0,
        "recorded_at": 10,
        "occurred_at": 8,
        "period_start": 1,
        "period_end": 2,
        "reservation_id": None,
        "grant": {
            "grant_id": "g|1",
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
    count, packed = entry_args(entry)
    args = _resp_args(packed)
    assert count == len(args) == 8
    assert args[0] == b"3,GRANT_CREATED,5,0,10,8,1,2,2"
    assert args[1] == b""
    assert json.loads(args[2]) == ["g|1", "promotion", 5, 3, 9, False]
    assert json.loads(args[3]) == ["p", "allow", 7, 100, '["x","y"]']
    assert args[4:] == [b"g|1", b"5", b"h", b"-2"]
    entry["terms"]["features"] = None
    assert json.loads(_resp_args(entry_args(entry)[1])[3])[4] == "*"

    debit = dict(entry, type="USAGE_DEBIT", grant=None, terms=None, reservation_id="r1")
    debit.update(balance_after=-7, allocations=[])
    count, packed = entry_args(debit)
    assert count == 4
    assert _resp_args(packed) == [b"3,USAGE_DEBIT,-7,0,10,8,1,2,0", b"r1", b"", b""]
    debit["reservation_id"] = None
    assert _resp_args(entry_args(debit)[1]) == [b"3,USAGE_DEBIT,-7,0,10,8,1,2,0", b"", b"", b""]


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


def test_readers_hide_spent_grants_once_expired() -> None:
    now = 1_000
    spent_expired = parse_grant("a", "0|10|1|1000|5|promotion")
    spent_later = parse_grant("b", "0|10|1|1001|5|promotion")
    spent_never = parse_grant("c", "0|10|1||5|purchase")
    left_expired = parse_grant("d", "3|10|1|999|5|promotion")  # its GRANT_EXPIRED is due
    assert not grant_listed(spent_expired, now)
    assert grant_listed(spent_later, now)
    assert grant_listed(spent_never, now)
    assert grant_listed(left_expired, now)

    # The balance script's reply: balance hash, grants hash, Redis time (ms).
    bal = [b"seq", b"4", b"available", b"3", b"policy", b"block", b"spent_expiry", b"1000"]
    grants = [
        b"a",
        b"0|10|1|1000|5|promotion",
        b"b",
        b"0|10|1|1001|5|promotion",
        b"d",
        b"3|10|1|999|5|promotion",
    ]
    balance = balance_from_reply("acct", [bal, grants, now, 7, 0])
    assert balance is not None
    assert [g.grant_id for g in balance.grants] == ["d", "b"]
    assert sum(g.remaining for g in balance.grants) == balance.available
    assert "spent_expiry" not in balance.to_json()
    assert balance.spendable == 7  # computed by the balance script's one spend rule
    assert [g.grant_id for g in balance_from_reply("acct", [bal, grants, 999, 7, 1]).grants] == [
        "d",
        "a",
        "b",
    ]  # type: ignore[union-attr]


def test_fail_modes() -> None:
    cache = PolicyCache(max_bytes=2 * (len("allow-acct") + 120))
    cache.remember("allow-acct", "allow")
    cache.remember("block-acct", "block")
    assert degraded_decision(FailMode.AUTO, cache, "allow-acct").allowed
    assert not degraded_decision(FailMode.AUTO, cache, "block-acct").allowed
    assert not degraded_decision(FailMode.AUTO, cache, "unknown").allowed
    assert degraded_decision(FailMode.AUTO, cache, "unknown", FailMode.OPEN).allowed  # unseen
    assert degraded_decision(FailMode.OPEN, cache, "x").spendable == 0  # never "unlimited"
    assert degraded_decision(FailMode.OPEN, cache, "block-acct").allowed
    closed = degraded_decision(FailMode.CLOSED, cache, "allow-acct")
    assert (closed.allowed, closed.degraded, closed.reason) == (
        False,
        True,
        "redis_unavailable_fail_closed",
    )
    cache.remember("third", "unlimited")
    assert cache.get("allow-acct") is None and len(cache) == 2  # LRU bound, by bytes
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


def test_instance_id_maps_to_static_group_membership(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from metering.topics import TopicNames
    from projections import consumer

    args = projection_cli.build_parser().parse_args(["--instance-id", "projection-0"])
    assert args.instance_id == "projection-0"
    assert projection_cli.build_parser().parse_args([]).instance_id is None

    configs: list[dict[str, Any]] = []

    class FakeConsumer:
        def __init__(self, config: dict[str, Any]) -> None:
            configs.append(config)

        def subscribe(self, topics: list[str], **callbacks: Any) -> None:
            pass

    monkeypatch.setattr(consumer, "Consumer", FakeConsumer)
    monkeypatch.setattr(consumer, "Producer", lambda config: None)
    for instance_id in ("projection-0", None):
        consumer.ProjectionConsumer(
            bootstrap="127.0.0.1:1",
            topics=TopicNames(),
            client=None,  # type: ignore[arg-type]
            prefix="mt:",
            decode=json.loads,
            instance_id=instance_id,
        )
    assert configs[0]["group.instance.id"] == "projection-0"
    assert "group.instance.id" not in configs[1]

    from consumers import sink_cli

    for main in (projection_cli.main, sink_cli.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "group.instance.id" in " ".join(capsys.readouterr().out.split())
