"""An account's balance as the Redis balance script answers it: the type and its parsing.

Kept apart from :mod:`projections.enforcement` (the operations) so the readers of a balance
(the sidecar, the account page, the projection's tests) share one decoding of the hashes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def text_of(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else value


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
    monthly_credits: int = 0
    """The plan's credits per period (the page's burn-down scale)."""
    spendable: int | None = None
    """What a check would allow now (available - reserved + overage headroom, by the scripts'
    one rule); None when the policy is ``unlimited``."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    items = [text_of(x) for x in flat]
    return dict(zip(items[0::2], items[1::2], strict=True))


def balance_from_reply(account: str, reply: Sequence[Any]) -> Balance | None:
    """The balance script's reply as a :class:`Balance` (None: no projection yet)."""
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
        monthly_credits=int(bal.get("monthly_credits", 0)),
        spendable=None if int(reply[4]) == 1 else int(reply[3]),
    )
