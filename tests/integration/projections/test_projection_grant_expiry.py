"""Spent grants leave Redis when they expire (issue 12 item 5).

A grant with nothing left gets no GRANT_EXPIRED entry (the engine emits one only for a
non-zero remaining), so the apply script deletes grants with remaining 0 once an applied
entry's event time reaches their ``expires_at``; readers (the enforcement library, hence the
sidecar and the account page) hide such grants at once by Redis's clock. The ledgers here come
from the real credit engine, and every projection is re-applied in other batchings and
compared, since a rebuild must reproduce it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from conftest import CREDIT, LedgerBuilder
from starlette.testclient import TestClient

from metering.domain import (
    AccountState,
    CommandKind,
    CreditCommand,
    CreditEngine,
    EngineConfig,
    LedgerEntry,
    UsageEvent,
    load_price_book,
    plans_from_text,
)
from metering.domain.periods import parse_instant
from projections.apply import Projector
from projections.balance import parse_grant
from projections.enforcement import Enforcer
from projections.keys import account_keys
from projections.rebuild import compare
from projections.sidecar import Sidecar

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 24 * HOUR
MAR_10 = parse_instant("2025-03-10T00:00:00Z")
APR_1 = parse_instant("2025-04-01T00:00:00Z")
MAY_1 = parse_instant("2025-05-01T00:00:00Z")
FAR = parse_instant("2100-01-01T00:00:00Z")
"""An expiry the wall clock will not reach while these tests run."""

PLANS = """
plans:
  tiny:
    monthly_credits: 3
    anchor_day: 1
    rollover: none
    overage: {policy: block}
    topups: true
    alert_thresholds: [100]
"""
API_KEY = "key-expiry"


class Account:
    """Drives one account through the credit engine and keeps its ledger as records."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.engine = CreditEngine(load_price_book(), plans_from_text(PLANS), EngineConfig())
        self.state: AccountState = self.engine.new_state(account)
        self.records: list[dict[str, Any]] = []
        self._n = 0

    def _keep(self, entries: Sequence[LedgerEntry]) -> list[dict[str, Any]]:
        out = [e.to_record() for e in entries]
        self.records += out
        return out

    def command(self, kind: str, at: int, **fields: Any) -> list[dict[str, Any]]:
        self._n += 1
        cmd = CreditCommand(
            f"{self.account}-c{self._n}", self.account, CommandKind(kind), at, **fields
        )
        outcome = self.engine.apply_command(self.state, cmd, at)
        assert outcome.rejection is None, outcome.rejection
        return self._keep(outcome.entries)

    def use(self, at: int, credits: int = 1) -> list[dict[str, Any]]:
        """``credits`` text requests of 1 credit each at event time ``at``."""
        entries: list[LedgerEntry] = []
        for _ in range(credits):
            self._n += 1
            event = UsageEvent(
                f"{self.account}-u{self._n}", self.account, "text_generation", {"requests": 1}, at
            )
            entries += self.engine.apply_usage(self.state, event, at).entries
        return self._keep(entries)

    def sweep(self, now: int) -> list[dict[str, Any]]:
        return self._keep(self.engine.sweep(self.state, now).entries)

    def engine_grants(self) -> dict[str, int]:
        """grant_id -> remaining of the grants the engine still holds with something left."""
        return {g.grant_id: g.remaining for g in self.state.grants if g.remaining}


def grants_hash(
    client: redis.Redis, prefix: str, account: str
) -> dict[str, tuple[int, int | None]]:
    """grant_id -> (remaining, expires_at) as stored in Redis."""
    raw = client.hgetall(account_keys(prefix, account).grants)
    out = {}
    for key, value in raw.items():
        grant = parse_grant(_text(key), _text(value))
        out[grant.grant_id] = (grant.remaining, grant.expires_at)
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def spent_expiry(client: redis.Redis, prefix: str, account: str) -> bytes | None:
    value = client.hget(account_keys(prefix, account).balance, "spent_expiry")
    return None if value is None else _text(value).encode()


def assert_rebuilds_alike(
    client: redis.Redis, live: str, records: list[dict[str, Any]], make_prefix: Any
) -> None:
    """Replaying the same ledger in other batchings gives exactly the live projection."""
    for size in (1, 2, 3, len(records)):
        other = make_prefix()
        projector = Projector(client, other)
        for start in range(0, len(records), size):
            assert not projector.apply_batch(records[start : start + size]).gaps
        assert compare(client, live, other) == [], size


@pytest.fixture
def sidecar(redis_url: str, prefix: str) -> Iterator[TestClient]:
    with TestClient(Sidecar(redis_url, prefix, {"svc": API_KEY}).app) as client:
        yield client


def listed(sidecar: TestClient, account: str) -> dict[str, int]:
    response = sidecar.get(f"/v1/accounts/{account}/balance", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200, response.text
    body = response.json()
    grants = {g["grant_id"]: g["remaining"] for g in body["grants"]}
    assert sum(grants.values()) == body["available"]
    return grants


def test_grant_used_to_zero_then_expired_is_dropped(
    rclient: redis.Redis,
    prefix: str,
    make_prefix: Any,
    sidecar: TestClient,
) -> None:
    acct = Account("spent-promo")
    promo_end = MAR_10 + 5 * DAY
    projector = Projector(rclient, prefix)

    def apply(records: list[dict[str, Any]]) -> None:
        result = projector.apply_batch(records)
        assert (result.applied, result.gaps) == (len(records), [])

    apply(acct.command("assign_plan", MAR_10, plan_id="tiny"))
    apply(acct.command("purchase", MAR_10, amount=10 * CREDIT, grant_id="buy"))
    apply(
        acct.command("promotion", MAR_10, amount=2 * CREDIT, grant_id="promo", expires_at=promo_end)
    )
    plan_grant = next(
        g for g in grants_hash(rclient, prefix, acct.account) if g.startswith("plan:")
    )
    assert spent_expiry(rclient, prefix, acct.account) == b""

    # Promotions burn first: two requests use it up. The engine forgets it; Redis keeps it
    # (remaining 0) until it expires, and notes its expiry.
    apply(acct.use(MAR_10 + HOUR, credits=2))
    assert "promo" not in acct.engine_grants()
    assert grants_hash(rclient, prefix, acct.account)["promo"] == (0, promo_end)
    assert spent_expiry(rclient, prefix, acct.account) == str(promo_end).encode()

    # Still before its expiry in event time: kept. The wall clock is long past 2025, so the
    # sidecar hides it already.
    apply(acct.use(MAR_10 + 2 * DAY))
    assert "promo" in grants_hash(rclient, prefix, acct.account)
    assert "promo" not in listed(sidecar, acct.account)

    # The next entry at or after its expiry (event time) drops it; nothing else changes.
    apply(acct.use(promo_end))
    grants = grants_hash(rclient, prefix, acct.account)
    assert "promo" not in grants
    assert (
        {g: r for g, (r, _) in grants.items()}
        == acct.engine_grants()
        == {
            plan_grant: 1 * CREDIT,
            "buy": 10 * CREDIT,
        }
    )
    assert spent_expiry(rclient, prefix, acct.account) == b""
    assert listed(sidecar, acct.account) == acct.engine_grants()

    assert_rebuilds_alike(rclient, prefix, acct.records, make_prefix)


def test_grants_expiring_with_nothing_left_across_period_resets(
    rclient: redis.Redis,
    prefix: str,
    make_prefix: Any,
    sidecar: TestClient,
) -> None:
    acct = Account("spent-reset")
    projector = Projector(rclient, prefix)

    def apply(records: list[dict[str, Any]]) -> None:
        result = projector.apply_batch(records)
        assert (result.applied, result.gaps) == (len(records), [])

    apply(acct.command("assign_plan", MAR_10, plan_id="tiny"))
    march_plan = next(iter(grants_hash(rclient, prefix, acct.account)))
    apply(acct.use(MAR_10 + HOUR, credits=3))  # the plan grant is used up
    assert grants_hash(rclient, prefix, acct.account) == {march_plan: (0, APR_1)}

    # The period closes: the used-up plan grant expires with nothing left (no GRANT_EXPIRED),
    # and the PERIOD_RESET entry at the boundary drops it.
    reset = acct.sweep(APR_1 + HOUR)
    types = [e["type"] for e in reset]
    assert "GRANT_EXPIRED" not in types and "PERIOD_RESET" in types
    apply(reset)
    april_plan = f"plan:{APR_1}"
    assert grants_hash(rclient, prefix, acct.account) == {april_plan: (3 * CREDIT, MAY_1)}

    # After the reset: a promotion expiring mid-April is used up, then the account goes idle.
    promo_end = APR_1 + 10 * DAY
    apply(
        acct.command(
            "promotion", APR_1 + DAY, amount=CREDIT, grant_id="april-promo", expires_at=promo_end
        )
    )
    apply(acct.use(APR_1 + 2 * DAY))
    assert grants_hash(rclient, prefix, acct.account)["april-promo"] == (0, promo_end)
    # Idle: no entry comes at its expiry, so Redis still has it; the sidecar does not show it.
    assert listed(sidecar, acct.account) == {april_plan: 3 * CREDIT}

    # The May reset drops it together with the April plan grant's GRANT_EXPIRED.
    apply(acct.sweep(MAY_1 + HOUR))
    may_plan = f"plan:{MAY_1}"
    assert grants_hash(rclient, prefix, acct.account) == {
        may_plan: (3 * CREDIT, parse_instant("2025-06-01T00:00:00Z"))
    }
    assert acct.engine_grants() == {may_plan: 3 * CREDIT}
    assert listed(sidecar, acct.account) == {may_plan: 3 * CREDIT}
    assert spent_expiry(rclient, prefix, acct.account) == b""

    assert_rebuilds_alike(rclient, prefix, acct.records, make_prefix)


def test_spent_grant_before_its_expiry_stays_listed(
    rclient: redis.Redis, prefix: str, ledger: type[LedgerBuilder], sidecar: TestClient
) -> None:
    a = ledger("spent-later")
    entries = [a.plan(), a.grant("g1", 2 * CREDIT, expires_at=FAR), a.grant("g2", CREDIT)]
    entries.append(a.debit(2 * CREDIT))
    assert not Projector(rclient, prefix).apply_batch(entries).gaps
    assert grants_hash(rclient, prefix, "spent-later") == {"g1": (0, FAR), "g2": (CREDIT, None)}
    assert listed(sidecar, "spent-later") == {"g1": 0, "g2": CREDIT}


def test_account_written_before_the_field_existed_is_scanned_once(
    rclient: redis.Redis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    """A projection from before this change has spent grants and no ``spent_expiry``."""
    a = ledger("legacy")
    projector = Projector(rclient, prefix)
    expiry = a.now + 10_000
    entries = [a.plan(), a.grant("old", CREDIT, expires_at=expiry)]
    entries += [a.grant("keep", 5 * CREDIT, expires_at=FAR), a.debit(CREDIT)]
    assert not projector.apply_batch(entries).gaps
    keys = account_keys(prefix, "legacy")
    assert rclient.hget(keys.balance, "spent_expiry") == str(expiry).encode()
    rclient.hdel(keys.balance, "spent_expiry")

    # An entry before the expiry: the scan finds "old" not yet due and notes its expiry.
    assert not projector.apply_batch([a.debit(1)]).gaps
    assert set(grants_hash(rclient, prefix, "legacy")) == {"old", "keep"}
    assert rclient.hget(keys.balance, "spent_expiry") == str(expiry).encode()

    rclient.hdel(keys.balance, "spent_expiry")
    late = a.debit(1)
    late["occurred_at"] = expiry + 1
    assert not projector.apply_batch([late]).gaps
    assert set(grants_hash(rclient, prefix, "legacy")) == {"keep"}
    assert rclient.hget(keys.balance, "spent_expiry") == b""


def test_enforcer_balance_hides_expired_spent_grants(
    rclient: redis.Redis, prefix: str, ledger: type[LedgerBuilder]
) -> None:
    a = ledger("library")
    entries = [a.plan(), a.grant("past", CREDIT, expires_at=a.now + 60_000)]
    entries += [a.grant("future", CREDIT, expires_at=FAR), a.debit(2 * CREDIT)]
    assert not Projector(rclient, prefix).apply_batch(entries).gaps
    assert set(grants_hash(rclient, prefix, "library")) == {"past", "future"}
    balance = Enforcer(rclient, prefix).balance("library")
    assert balance is not None
    assert [(g.grant_id, g.remaining) for g in balance.grants] == [("future", 0)]
