"""Enforcement library: may this account spend, before the AI request runs?

Every operation is one Lua script, so it is one Redis round trip and atomic: concurrent
reserves can never overspend. ``Enforcer`` is synchronous (redis-py), ``AsyncEnforcer``
is for asyncio (redis.asyncio). All amounts are integer micro-credits.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from metering.domain.identifiers import identifier_problem, is_identifier
from projections.balance import Balance, balance_from_reply, text_of
from projections.keys import (
    HOLD_SEP,
    LayoutError,
    account_keys,
    check_account,
    check_prefix,
    hold_account,
)
from projections.redis_connect import AsyncRedis, SyncRedis, aconnect, connect
from projections.scripts import script

MAX_TTL_S = 86_400.0
MAX_AMOUNT = 2**53 - 1
"""Largest amount (micro-credits): exact in a double, hence in Lua and in JSON clients."""
KEY_CACHE_BYTES = 8 << 20
"""Budget of the per-account key cache: bounded by bytes, not entries, so ids of any length
(at most 256 bytes by the identifier rule) cannot grow it past a few megabytes."""
DEFAULT_SETTLE_TTL_S = 300.0
"""How long a committed hold stays reserved while the ledger debit is on its way."""
SETTLEMENT_TTL_S = 3_600.0
"""How long a hold's settlement (committed or released) is remembered, so a retried commit
or release within the hour gets the same answer. Longer would only grow a busy account's holds
hash (one record per settled hold)."""

ALLOWED = "ok"
UNKNOWN_ACCOUNT = "unknown_account"
UNKNOWN_FEATURE = "unknown_feature"
FEATURE_NOT_IN_PLAN = "feature_not_in_plan"
INSUFFICIENT = "insufficient_credits"


class EnforcementError(ValueError):
    """Bad arguments to the enforcement API (the sidecar turns these into 4xx)."""


class HoldConflict(EnforcementError):
    """The hold was settled differently already: committed at another amount, or released
    (on commit), or committed (on release). The sidecar answers 409."""


class FeatureSet(Protocol):
    """The price book's features (``projections.features.FeatureCatalog``): a feature it does
    not know is denied, since its usage could never be charged."""

    def known(self, feature: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Settlement:
    """The answer to a commit: ``committed`` stays reserved until the ledger debit lands;
    ``held_back`` is the part of ``actual`` the account could not cover."""

    hold_id: str
    actual: int
    committed: int

    @property
    def held_back(self) -> int:
        return self.actual - self.committed

    def to_json(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "status": "committed",
            "actual": self.actual,
            "committed": self.committed,
            "held_back": self.held_back,
        }


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


UNKNOWN_FEATURE_DECISION = Decision(allowed=False, reason=UNKNOWN_FEATURE, spendable=0)
"""The price book does not price the feature: its usage would be dead-lettered, never charged."""


def check_amount(name: str, value: object, *, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnforcementError(f"{name} must be an integer number of micro-credits")
    if value < 0 or (value == 0 and not allow_zero) or value > MAX_AMOUNT:
        raise EnforcementError(f"{name} out of range: {value}")
    return value


def _ttl_ms(name: str, ttl_s: object) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise EnforcementError(f"{name} must be a number of seconds")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise EnforcementError(f"{name} must be in (0, {MAX_TTL_S:g}] seconds")
    return max(1, int(ttl_s * 1000))


def new_hold_id(account: str, token: str | None = None) -> str:
    """``<32 hex>:<account>``: unique, and it names the account so commit finds its keys.
    ``token`` (32 hex) lets a caller embed its own proof of ownership (the sidecar does)."""
    return (token or secrets.token_hex(16)) + HOLD_SEP + account


def _decision(reply: Sequence[Any], hold_id: str | None = None) -> Decision:
    allowed = int(reply[0]) == 1
    reason = text_of(reply[1])
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
        policy=text_of(reply[6]) or None,
        spendable=None if unlimited else int(reply[7]),
        seq=int(reply[9]),
        plan=text_of(reply[10]) or None,
        hold_id=hold_id if allowed else None,
    )


def _redis_from_env() -> tuple[str, str]:
    from metering.config import load_settings
    from projections.keys import prefix_from_env

    return load_settings().redis_url, prefix_from_env()


class _Base:
    def __init__(
        self, prefix: str, settle_ttl_s: float, features: FeatureSet | None = None
    ) -> None:
        self.prefix = check_prefix(prefix)
        self.settle_ttl_ms = _ttl_ms("settle_ttl_s", settle_ttl_s)
        self.settlement_ttl_ms = _ttl_ms("settlement_ttl_s", SETTLEMENT_TTL_S)
        self.features = features
        self._check = script("check")
        self._reserve = script("reserve")
        self._commit = script("commit")
        self._release = script("release")
        self._balance = script("balance")
        self._key_cache: dict[str, list[str]] = {}
        self._key_cache_bytes = 0

    def _keys(self, account: str) -> list[str]:
        """The account's 4 keys; cached (validated once), since every call on the hot path
        needs them. The list is shared: callers must not modify it."""
        keys = self._key_cache.get(account)
        if keys is not None:
            return keys
        if not isinstance(account, str):
            raise EnforcementError("account must be a string")
        try:
            keys = account_keys(self.prefix, check_account(account)).as_list()
        except LayoutError as exc:
            raise EnforcementError(str(exc)) from exc
        size = len(account) + sum(len(k) for k in keys) + 200  # + dict/list/str overheads
        if self._key_cache_bytes + size > KEY_CACHE_BYTES:
            self._key_cache.clear()
            self._key_cache_bytes = 0
        self._key_cache[account] = keys
        self._key_cache_bytes += size
        return keys

    def _feature(self, feature: str | None) -> str:
        """The feature argument of the scripts ('' = any), or raise for a bad one."""
        if feature is None:
            return ""
        if not is_identifier(feature):
            problem = identifier_problem(feature) or "is not a valid identifier"
            raise EnforcementError(f"feature {problem}")
        return feature

    def unknown_feature(self, feature: str | None) -> bool:
        """True when a price book is known and does not price ``feature``."""
        return (
            feature is not None and self.features is not None and not self.features.known(feature)
        )

    def _settlement(self, hold: str, actual: int, reply: Sequence[Any]) -> Settlement | None:
        status = int(reply[0])
        if status == 0:
            return None
        if status == 409:
            if int(reply[1]) < 0:
                raise HoldConflict("hold was released; it cannot be committed")
            raise HoldConflict(f"hold was already committed at {int(reply[1])}, not {actual}")
        return Settlement(hold, int(reply[1]), int(reply[2]))

    @staticmethod
    def _released(reply: Sequence[Any]) -> bool:
        status = int(reply[0])
        if status == 409:
            raise HoldConflict("hold was committed; its spend stays reserved until it is debited")
        return status == 1


class Enforcer(_Base):
    """Synchronous enforcement over a redis-py client."""

    def __init__(
        self,
        client: SyncRedis,
        prefix: str,
        *,
        settle_ttl_s: float = DEFAULT_SETTLE_TTL_S,
        features: FeatureSet | None = None,
    ) -> None:
        super().__init__(prefix, settle_ttl_s, features)
        self.client = client

    @classmethod
    def from_env(cls) -> Enforcer:
        """Redis and key prefix from ``METERING_REDIS_URL`` / ``METERING_REDIS_PREFIX``, else
        the running local stack (see ``metering env``)."""
        url, prefix = _redis_from_env()
        return cls(connect(url), prefix)

    def check(self, account: str, feature: str | None, estimated_credits: int) -> Decision:
        """May ``account`` spend ``estimated_credits`` micro-credits on ``feature``?"""
        cost = check_amount("estimated_credits", estimated_credits)
        keys, feature_arg = self._keys(account), self._feature(feature)
        if self.unknown_feature(feature):
            return UNKNOWN_FEATURE_DECISION
        return _decision(self._check.call(self.client, keys, [feature_arg, cost]))

    def try_reserve(
        self,
        account: str,
        amount: int,
        ttl_s: float,
        feature: str | None = None,
        *,
        hold_id: str | None = None,
    ) -> Decision:
        """Hold ``amount`` for ``ttl_s`` seconds if it fits; the Decision carries the hold id."""
        value = check_amount("amount", amount, allow_zero=False)
        ttl = _ttl_ms("ttl_s", ttl_s)
        keys, feature_arg = self._keys(account), self._feature(feature)
        if self.unknown_feature(feature):
            return UNKNOWN_FEATURE_DECISION
        hold_id = hold_id or new_hold_id(account)
        args: list[str | int] = [hold_id, value, ttl, feature_arg]
        return _decision(self._reserve.call(self.client, keys, args), hold_id)

    def reserve(self, account: str, amount: int, ttl_s: float, feature: str | None = None) -> str:
        """Hold ``amount``; return the hold id or raise :class:`ReservationDenied`."""
        decision = self.try_reserve(account, amount, ttl_s, feature)
        if not decision.allowed or decision.hold_id is None:
            raise ReservationDenied(decision)
        return decision.hold_id

    def commit(self, hold: str, actual: int) -> Settlement | None:
        """Settle a hold at ``actual`` (idempotent); None if it expired or never existed.
        Raises :class:`HoldConflict` after a release or a commit at another amount."""
        value = check_amount("actual", actual)
        keys = self._keys(_hold_account(hold))
        args: list[str | int] = [hold, value, self.settle_ttl_ms, self.settlement_ttl_ms]
        return self._settlement(hold, value, self._commit.call(self.client, keys, args))

    def release(self, hold: str) -> bool:
        """Give a hold back (idempotent); False if it expired or never existed. Raises
        :class:`HoldConflict` after a commit."""
        keys = self._keys(_hold_account(hold))
        reply = self._release.call(self.client, keys, [hold, self.settlement_ttl_ms])
        return self._released(reply)

    def balance(self, account: str) -> Balance | None:
        return balance_from_reply(account, self._balance.call(self.client, self._keys(account), []))


class AsyncEnforcer(_Base):
    """The same operations for asyncio code (redis.asyncio client)."""

    def __init__(
        self,
        client: AsyncRedis,
        prefix: str,
        *,
        settle_ttl_s: float = DEFAULT_SETTLE_TTL_S,
        features: FeatureSet | None = None,
    ) -> None:
        super().__init__(prefix, settle_ttl_s, features)
        self.client = client

    @classmethod
    def from_env(cls) -> AsyncEnforcer:
        """As :meth:`Enforcer.from_env`, on a ``redis.asyncio`` client."""
        url, prefix = _redis_from_env()
        return cls(aconnect(url), prefix)

    async def check(self, account: str, feature: str | None, estimated_credits: int) -> Decision:
        cost = check_amount("estimated_credits", estimated_credits)
        keys, feature_arg = self._keys(account), self._feature(feature)
        if self.unknown_feature(feature):
            return UNKNOWN_FEATURE_DECISION
        return _decision(await self._check.acall(self.client, keys, [feature_arg, cost]))

    async def try_reserve(
        self,
        account: str,
        amount: int,
        ttl_s: float,
        feature: str | None = None,
        *,
        hold_id: str | None = None,
    ) -> Decision:
        value = check_amount("amount", amount, allow_zero=False)
        ttl = _ttl_ms("ttl_s", ttl_s)
        keys, feature_arg = self._keys(account), self._feature(feature)
        if self.unknown_feature(feature):
            return UNKNOWN_FEATURE_DECISION
        hold_id = hold_id or new_hold_id(account)
        args: list[str | int] = [hold_id, value, ttl, feature_arg]
        return _decision(await self._reserve.acall(self.client, keys, args), hold_id)

    async def reserve(
        self, account: str, amount: int, ttl_s: float, feature: str | None = None
    ) -> str:
        decision = await self.try_reserve(account, amount, ttl_s, feature)
        if not decision.allowed or decision.hold_id is None:
            raise ReservationDenied(decision)
        return decision.hold_id

    async def commit(self, hold: str, actual: int) -> Settlement | None:
        value = check_amount("actual", actual)
        keys = self._keys(_hold_account(hold))
        args: list[str | int] = [hold, value, self.settle_ttl_ms, self.settlement_ttl_ms]
        return self._settlement(hold, value, await self._commit.acall(self.client, keys, args))

    async def release(self, hold: str) -> bool:
        keys = self._keys(_hold_account(hold))
        reply = await self._release.acall(self.client, keys, [hold, self.settlement_ttl_ms])
        return self._released(reply)

    async def balance(self, account: str) -> Balance | None:
        reply = await self._balance.acall(self.client, self._keys(account), [])
        return balance_from_reply(account, reply)


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
