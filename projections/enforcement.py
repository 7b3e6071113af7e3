"""Enforcement library: may this account spend, before the AI request runs?

Every operation is one Lua script, so it is one Redis round trip and atomic: concurrent
reserves can never overspend. ``Enforcer`` is synchronous (redis-py), ``AsyncEnforcer``
is for asyncio (redis.asyncio). All amounts are integer micro-credits.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from projections.keys import (
    HOLD_SEP,
    LayoutError,
    account_keys,
    check_account,
    check_prefix,
    hold_account,
)
from projections.scripts import script

MAX_TTL_S = 86_400.0
_KEY_CACHE_SIZE = 100_000
DEFAULT_SETTLE_TTL_S = 300.0
"""How long a committed hold stays reserved while the ledger debit is on its way."""

ALLOWED = "ok"
UNKNOWN_ACCOUNT = "unknown_account"
FEATURE_NOT_IN_PLAN = "feature_not_in_plan"
INSUFFICIENT = "insufficient_credits"


class EnforcementError(ValueError):
    """Bad arguments to the enforcement API (the sidecar turns these into 4xx)."""


class ReservationDenied(Exception):
    """``reserve`` could not hold the amount; ``decision`` says why."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to check/reserve. ``spendable`` is None when overage is unlimited."""

    allowed: bool
    reason: str
    available: int = 0
    reserved: int = 0
    overage_used: int = 0
    overage_limit: int = 0
    policy: str | None = None
    spendable: int | None = 0
    plan: str | None = None
    seq: int = 0
    hold_id: str | None = None
    degraded: bool = False
    """True when Redis was unreachable and the answer came from the fail mode."""

    def to_json(self) -> dict[str, Any]:
        # Hand-written rather than asdict(): this is on the sidecar's hot path.
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "available": self.available,
            "reserved": self.reserved,
            "overage_used": self.overage_used,
            "overage_limit": self.overage_limit,
            "policy": self.policy,
            "spendable": self.spendable,
            "plan": self.plan,
            "seq": self.seq,
            "hold_id": self.hold_id,
            "degraded": self.degraded,
        }


@dataclass(frozen=True, slots=True)
class GrantView:
    grant_id: str
    source: str
    remaining: int
    amount: int
    priority: int
    expires_at: int | None
    effective_at: int


@dataclass(frozen=True, slots=True)
class Balance:
    """What ``GET /v1/accounts/{id}/balance`` shows."""

    account_id: str
    available: int
    reserved: int
    overage_used: int
    overage_limit: int
    policy: str
    plan: str
    features: list[str] | None
    period_start: int
    period_end: int
    seq: int
    updated_at: int
    grants: list[GrantView]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _amount(name: str, value: object, *, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnforcementError(f"{name} must be an integer number of micro-credits")
    if value < 0 or (value == 0 and not allow_zero) or value >= 2**53:
        raise EnforcementError(f"{name} out of range: {value}")
    return value


def _ttl_ms(name: str, ttl_s: object) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise EnforcementError(f"{name} must be a number of seconds")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise EnforcementError(f"{name} must be in (0, {MAX_TTL_S:g}] seconds")
    return max(1, int(ttl_s * 1000))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def new_hold_id(account: str) -> str:
    """``<32 hex>:<account>``: unique, and it names the account so commit finds its keys."""
    return secrets.token_hex(16) + HOLD_SEP + account


def _decision(reply: Sequence[Any], hold_id: str | None = None) -> Decision:
    allowed = int(reply[0]) == 1
    reason = _text(reply[1])
    if reason == UNKNOWN_ACCOUNT or reason == "duplicate_hold_id":
        return Decision(allowed=False, reason=reason, spendable=0)
    unlimited = int(reply[8]) == 1
    return Decision(
        allowed=allowed,
        reason=reason,
        available=int(reply[2]),
        reserved=int(reply[3]),
        overage_used=int(reply[4]),
        overage_limit=int(reply[5]),
        policy=_text(reply[6]) or None,
        spendable=None if unlimited else int(reply[7]),
        seq=int(reply[9]),
        plan=_text(reply[10]) or None,
        hold_id=hold_id if allowed else None,
    )


def parse_grant(grant_id: str, raw: str) -> GrantView:
    """Decode a grants-hash value: ``remaining|amount|priority|expires_at|effective_at|source``."""
    remaining, amount, priority, expires_at, effective_at, source = raw.split("|", 5)
    return GrantView(
        grant_id=grant_id,
        source=source,
        remaining=int(remaining),
        amount=int(amount),
        priority=int(priority),
        expires_at=int(expires_at) if expires_at else None,
        effective_at=int(effective_at),
    )


def grant_listed(grant: GrantView, now_ms: int) -> bool:
    """Whether a reader shows ``grant`` at wall-clock ``now_ms``.

    A grant with nothing left that has expired is hidden: it gets no GRANT_EXPIRED entry, and
    the apply script deletes it only once a later entry's event time passes its expiry (an
    idle account may have none for a while). Grants with something left stay listed until
    their GRANT_EXPIRED entry arrives, so the listed grants always add up to ``available``.
    """
    return grant.remaining > 0 or grant.expires_at is None or grant.expires_at > now_ms


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    items = [_text(x) for x in flat]
    return dict(zip(items[0::2], items[1::2], strict=True))


def _balance(account: str, reply: Sequence[Any]) -> Balance | None:
    bal = _pairs(reply[0])
    if "seq" not in bal:
        return None
    now = int(reply[2])  # Redis TIME (ms), the clock every script uses
    grants = sorted(
        (
            grant
            for gid, raw in _pairs(reply[1]).items()
            if grant_listed(grant := parse_grant(gid, raw), now)
        ),
        key=lambda g: (g.priority, g.expires_at is None, g.expires_at or 0, g.grant_id),
    )
    features = bal.get("features", "*")
    return Balance(
        account_id=account,
        available=int(bal.get("available", 0)),
        reserved=int(bal.get("reserved", 0)),
        overage_used=int(bal.get("overage_used", 0)),
        overage_limit=int(bal.get("overage_limit", 0)),
        policy=bal.get("policy", "block"),
        plan=bal.get("plan", ""),
        features=None if features == "*" else list(json.loads(features)),
        period_start=int(bal.get("period_start", 0)),
        period_end=int(bal.get("period_end", 0)),
        seq=int(bal["seq"]),
        updated_at=int(bal.get("updated_at", 0)),
        grants=grants,
    )


class _Base:
    def __init__(self, prefix: str, settle_ttl_s: float) -> None:
        self.prefix = check_prefix(prefix)
        self.settle_ttl_ms = _ttl_ms("settle_ttl_s", settle_ttl_s)
        self._check = script("check")
        self._reserve = script("reserve")
        self._commit = script("commit")
        self._release = script("release")
        self._balance = script("balance")
        self._key_cache: dict[str, list[str]] = {}

    def _keys(self, account: str) -> list[str]:
        """The account's 4 keys; cached (validated once), since every call on the hot path
        needs them. The list is shared: callers must not modify it."""
        if not isinstance(account, str):
            raise EnforcementError("account must be a string")
        keys = self._key_cache.get(account)
        if keys is not None:
            return keys
        try:
            keys = account_keys(self.prefix, check_account(account)).as_list()
        except LayoutError as exc:
            raise EnforcementError(str(exc)) from exc
        if len(self._key_cache) >= _KEY_CACHE_SIZE:
            self._key_cache.clear()
        self._key_cache[account] = keys
        return keys

    @staticmethod
    def _feature(feature: str | None) -> str:
        if feature is None:
            return ""
        if not isinstance(feature, str):
            raise EnforcementError("feature must be a string")
        return feature


class Enforcer(_Base):
    """Synchronous enforcement over a redis-py client."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        settle_ttl_s: float = DEFAULT_SETTLE_TTL_S,
    ) -> None:
        super().__init__(prefix, settle_ttl_s)
        self.client = client

    def check(self, account: str, feature: str | None, estimated_credits: int) -> Decision:
        """May ``account`` spend ``estimated_credits`` micro-credits on ``feature``?"""
        cost = _amount("estimated_credits", estimated_credits)
        reply = self._check.call(self.client, self._keys(account), [self._feature(feature), cost])
        return _decision(reply)

    def try_reserve(
        self, account: str, amount: int, ttl_s: float, feature: str | None = None
    ) -> Decision:
        """Hold ``amount`` for ``ttl_s`` seconds if it fits; the Decision carries the hold id."""
        value = _amount("amount", amount, allow_zero=False)
        ttl = _ttl_ms("ttl_s", ttl_s)
        keys = self._keys(account)
        hold_id = new_hold_id(account)
        args: list[str | int] = [hold_id, value, ttl, self._feature(feature)]
        reply = self._reserve.call(self.client, keys, args)
        return _decision(reply, hold_id)

    def reserve(self, account: str, amount: int, ttl_s: float, feature: str | None = None) -> str:
        """Hold ``amount``; return the hold id or raise :class:`ReservationDenied`."""
        decision = self.try_reserve(account, amount, ttl_s, feature)
        if not decision.allowed or decision.hold_id is None:
            raise ReservationDenied(decision)
        return decision.hold_id

    def commit(self, hold: str, actual: int) -> bool:
        """Settle a hold at ``actual``; False if it had already expired or been settled."""
        value = _amount("actual", actual)
        keys = self._keys(_hold_account(hold))
        reply = self._commit.call(self.client, keys, [hold, value, self.settle_ttl_ms])
        return int(reply[0]) == 1

    def release(self, hold: str) -> bool:
        """Give a hold back; False if it had already expired or been settled."""
        reply = self._release.call(self.client, self._keys(_hold_account(hold)), [hold])
        return int(reply[0]) == 1

    def balance(self, account: str) -> Balance | None:
        return _balance(account, self._balance.call(self.client, self._keys(account), []))


class AsyncEnforcer(_Base):
    """The same operations for asyncio code (redis.asyncio client)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        *,
        settle_ttl_s: float = DEFAULT_SETTLE_TTL_S,
    ) -> None:
        super().__init__(prefix, settle_ttl_s)
        self.client = client

    async def check(self, account: str, feature: str | None, estimated_credits: int) -> Decision:
        cost = _amount("estimated_credits", estimated_credits)
        keys = self._keys(account)
        reply = await self._check.acall(self.client, keys, [self._feature(feature), cost])
        return _decision(reply)

    async def try_reserve(
        self, account: str, amount: int, ttl_s: float, feature: str | None = None
    ) -> Decision:
        value = _amount("amount", amount, allow_zero=False)
        ttl = _ttl_ms("ttl_s", ttl_s)
        keys = self._keys(account)
        hold_id = new_hold_id(account)
        args: list[str | int] = [hold_id, value, ttl, self._feature(feature)]
        reply = await self._reserve.acall(self.client, keys, args)
        return _decision(reply, hold_id)

    async def reserve(
        self, account: str, amount: int, ttl_s: float, feature: str | None = None
    ) -> str:
        decision = await self.try_reserve(account, amount, ttl_s, feature)
        if not decision.allowed or decision.hold_id is None:
            raise ReservationDenied(decision)
        return decision.hold_id

    async def commit(self, hold: str, actual: int) -> bool:
        value = _amount("actual", actual)
        keys = self._keys(_hold_account(hold))
        reply = await self._commit.acall(self.client, keys, [hold, value, self.settle_ttl_ms])
        return int(reply[0]) == 1

    async def release(self, hold: str) -> bool:
        reply = await self._release.acall(self.client, self._keys(_hold_account(hold)), [hold])
        return int(reply[0]) == 1

    async def balance(self, account: str) -> Balance | None:
        reply = await self._balance.acall(self.client, self._keys(account), [])
        return _balance(account, reply)


def _hold_account(hold: str) -> str:
    if not isinstance(hold, str):
        raise EnforcementError("hold id must be a string")
    try:
        return hold_account(hold)
    except ValueError as exc:
        raise EnforcementError(str(exc)) from exc


def decision_from_json(data: Mapping[str, Any]) -> Decision:
    """Inverse of :meth:`Decision.to_json` (used by clients of the sidecar)."""
    return Decision(**{k: data[k] for k in Decision.__dataclass_fields__ if k in data})
