"""What the sidecar answers when Redis is unreachable (pure, no I/O).

``closed`` denies, ``open`` allows, ``auto`` (default) denies accounts under ``block`` and
allows the others. Redis holds the policy, so ``auto`` remembers the last policy it saw per
account in-process; an account it has never seen is treated as ``block`` (closed).
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


class PolicyCache:
    """Bounded LRU of account -> last known overage policy."""

    def __init__(self, max_size: int = 100_000) -> None:
        self.max_size = max_size
        self._data: OrderedDict[str, str] = OrderedDict()

    def remember(self, account: str, policy: str | None) -> None:
        if not policy:
            return
        self._data[account] = policy
        self._data.move_to_end(account)
        if len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def get(self, account: str) -> str | None:
        return self._data.get(account)

    def __len__(self) -> int:
        return len(self._data)


def degraded_decision(mode: FailMode, cache: PolicyCache, account: str) -> Decision:
    """The answer without Redis: allowed per the mode, marked ``degraded``."""
    policy = cache.get(account)
    if mode is FailMode.OPEN:
        allowed = True
    elif mode is FailMode.CLOSED:
        allowed = False
    else:
        allowed = policy is not None and policy != "block"
    return Decision(
        allowed=allowed,
        reason=REASON_OPEN if allowed else REASON_CLOSED,
        policy=policy,
        spendable=None,
        degraded=True,
    )
