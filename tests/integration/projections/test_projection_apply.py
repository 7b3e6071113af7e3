"""The apply script against a real Redis: idempotent, gap-detecting, grants and holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import CREDIT, LedgerBuilder

from projections.apply import Projector
from projections.balance import parse_grant
from projections.enforcement import Enforcer, HoldConflict
from projections.keys import account_keys
from projections.redis_connect import SyncRedis

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster_too]


def dump(client: SyncRedis, prefix: str, account: str) -> dict[str, Any]:
    keys = account_keys(prefix, account)
    return {
        "bal": client.hgetall(keys.balance),
        "grants": client.hgetall(keys.grants),
        "holds": client.hgetall(keys.holds),
        "holdx": client.zrange(keys.hold_expiry, 0, -1, withscores=True),
    }


def test_reapplying_entries_changes_nothing(
    rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a, b = ledger("acct-a"), ledger("acct-b")
    entries = [
        a.plan("allow", limit=5 * CREDIT, features=["text_generation"]),
        b.plan("block"),
        a.grant("g1", 10 * CREDIT, expires_at=1_800_000_000_000),
        b.grant("g2", 3 * CREDIT),
        a.grant("g3", 2 * CREDIT, priority=1),
        a.debit(3 * CREDIT),
        b.debit(1 * CREDIT),
        a.expire("g3"),
        a.debit(12 * CREDIT),
    ]
    projector = Projector(rclient, prefix)
    first = projector.apply_batch(entries)
    assert (first.applied, first.skipped, first.gaps) == (len(entries), 0, [])
    before = (dump(rclient, prefix, "acct-a"), dump(rclient, prefix, "acct-b"))

    for chunk in (entries, entries[:4], entries[3:], list(reversed(entries))):
        again = projector.apply_batch(chunk)
        assert again.applied == 0 and again.skipped == len(chunk) and not again.gaps
        assert (dump(rclient, prefix, "acct-a"), dump(rclient, prefix, "acct-b")) == before

    bal = {k.decode(): v.decode() for k, v in before[0]["bal"].items()}
    assert bal["seq"] == "6"
    assert int(bal["available"]) == a.balance == 0
    assert int(bal["overage_used"]) == a.overage == 5 * CREDIT
    assert (bal["policy"], bal["plan"], bal["overage_limit"]) == ("allow", "pro", str(5 * CREDIT))
    assert json.loads(bal["features"]) == ["text_generation"]
    grants = {
        k.decode(): parse_grant(k.decode(), v.decode()) for k, v in before[0]["grants"].items()
    }
    assert set(grants) == {"g1"}  # g3 expired
    assert grants["g1"].remaining == 0 and grants["g1"].amount == 10 * CREDIT
    assert grants["g1"].expires_at == 1_800_000_000_000 and grants["g1"].source == "plan"


def test_gap_is_reported_and_not_applied(
    rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("acct-gap")
    e1, e2, e3 = a.plan(), a.grant("g1", 5 * CREDIT), a.debit(CREDIT)
    projector = Projector(rclient, prefix)
    projector.apply_batch([e1])
    before = dump(rclient, prefix, "acct-gap")

    result = projector.apply_batch([e3])
    assert result.applied == 0
    assert [(g.account, g.stored_seq, g.got_seq, g.index) for g in result.gaps] == [
        ("acct-gap", 1, 3, 0)
    ]
    assert dump(rclient, prefix, "acct-gap") == before

    # A brand-new account must start at seq 1.
    late = ledger("acct-late")
    late.plan()
    assert projector.apply_batch([late.grant("g", 1)]).gaps[0].got_seq == 2

    # The missing entry arrives: both apply, in seq order.
    healed = projector.apply_batch([e3, e2])
    assert healed.applied == 2 and not healed.gaps
    assert rclient.hget(account_keys(prefix, "acct-gap").balance, "seq") == b"3"


def test_debit_with_reservation_id_settles_the_hold(
    rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("acct-hold")
    projector = Projector(rclient, prefix)
    projector.apply_batch([a.plan(), a.grant("g1", 10 * CREDIT)])
    enforcer = Enforcer(rclient, prefix)
    hold = enforcer.reserve("acct-hold", 4 * CREDIT, ttl_s=60)
    other = enforcer.reserve("acct-hold", 1 * CREDIT, ttl_s=60)
    assert enforcer.check("acct-hold", None, 5 * CREDIT).allowed
    assert not enforcer.check("acct-hold", None, 5 * CREDIT + 1).allowed

    assert enforcer.commit(hold, 3 * CREDIT)  # shrinks to the actual cost, still held
    assert enforcer.balance("acct-hold").reserved == 4 * CREDIT  # type: ignore[union-attr]

    projector.apply_batch([a.debit(3 * CREDIT, reservation_id=hold)])
    balance = enforcer.balance("acct-hold")
    assert balance is not None
    assert (balance.available, balance.reserved) == (7 * CREDIT, 1 * CREDIT)
    with pytest.raises(HoldConflict):  # committed: released only by its debit
        enforcer.release(hold)
    assert enforcer.release(other)
    assert enforcer.balance("acct-hold").reserved == 0  # type: ignore[union-attr]


def test_script_flush_is_survived(
    rclient: SyncRedis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("acct-noscript")
    projector = Projector(rclient, prefix)
    projector.apply_batch([a.plan()])
    rclient.script_flush()
    assert projector.apply_batch([a.grant("g1", CREDIT)]).applied == 1
    rclient.script_flush()
    assert Enforcer(rclient, prefix).check("acct-noscript", None, CREDIT).allowed
