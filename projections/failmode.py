"""What the sidecar answers when Redis is unreachable (pure, no I/O).

``closed`` denies, ``open`` allows, ``auto`` (default) denies accounts under ``block`` and
allows the others. Redis holds the policy, so ``auto`` remembers the last policy it saw per
account in-process (and the sidecar loads every account's policy when it starts and whenever
Redis comes back). An account it has never seen gets the *unseen* answer,
``METERING_FAIL_MODE_UNSEEN``: ``closed`` by default (a new account has no credit to lose), or
``open`` for products that would rather serve than refuse an account they cannot look up.

A degraded answer never looks like a real one: ``degraded`` is true, ``spendable`` is 0 (null
means "unlimited" elsewhere) and no hold is made.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

from projections.enforcement import Decision


class FailMode(Enum):
    CLOSED = "closed"
    OPEN = "open"
    AUTO = "auto"

    @classmethod
    def parse(cls, value: str) -> FailMode:
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"fail mode {value!r}: expected one of {choices}") from None


REASON_OPEN = "redis_unavailable_fail_open"
REASON_CLOSED = "redis_unavailable_fail_closed"


POLICY_CACHE_BYTES = 16 << 20
"""Budget of the policy cache, by bytes: ids are at most 256 bytes, so about 60,000 accounts of
the longest ids, or several hundred thousand of typical ones."""
_ENTRY_OVERHEAD = 120
"""Bytes an entry costs besides its id: the OrderedDict node, the str header, the policy."""


class PolicyCache:
    """LRU of account -> last known overage policy, bounded by (estimated) bytes."""

    def __init__(self, max_bytes: int = POLICY_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, str] = OrderedDict()

    def remember(self, account: str, policy: str | None) -> None:
        if not policy:
            return
        data = self._data
        if data.get(account) == policy:
            data.move_to_end(account)
            return
        if account not in data:
            self.bytes += len(account) + _ENTRY_OVERHEAD
        data[account] = policy
        data.move_to_end(account)
        while self.bytes > self.max_bytes and data:
            old, _ = data.popitem(last=False)
            self.bytes -= len(old) + _ENTRY_OVERHEAD

    def get(self, account: str) -> str | None:
        return self._data.get(account)

    def __len__(self) -> int:
        return len(self._data)


def degraded_decision(
    mode: FailMode, cache: PolicyCache, account: str, unseen: FailMode = FailMode.CLOSED
) -> Decision:
    """The answer without Redis: allowed per the mode, marked ``degraded``."""
    policy = cache.get(account)
    if mode is FailMode.OPEN:
        allowed = True
    elif mode is FailMode.CLOSED:
        allowed = False
    elif policy is None:
        allowed = unseen is FailMode.OPEN
    else:
        allowed = policy != "block"
    return Decision(
        allowed=allowed,
        reason=REASON_OPEN if allowed else REASON_CLOSED,
        policy=policy,
        spendable=0,
        degraded=True,
    )


def parse_unseen(value: str) -> FailMode:
    """``METERING_FAIL_MODE_UNSEEN``: ``closed`` or ``open`` (``auto`` has no policy to use)."""
    mode = FailMode.parse(value)
    if mode is FailMode.AUTO:
        raise ValueError("METERING_FAIL_MODE_UNSEEN: expected closed or open")
    return mode
