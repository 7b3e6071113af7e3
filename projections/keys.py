"""Redis key layout of the projection: every key of one account shares its ``{account}`` tag.

All keys of an account hash to one Redis Cluster slot, so each Lua script touches one
slot only. The prefix lets a rebuild write into an empty keyspace next to the live one.
"""

from __future__ import annotations

from dataclasses import dataclass

from metering.config import env_value
from metering.domain.identifiers import identifier_problem, is_identifier

DEFAULT_PREFIX = "mt:"
"""Live projection prefix; override with ``METERING_REDIS_PREFIX``."""

REBUILD_PREFIX = "mt-rebuild:"
"""Default target of ``metering projection rebuild``."""

BALANCE_FIELDS: tuple[str, ...] = (
    "available",
    "reserved",
    "overage_used",
    "overage_limit",
    "policy",
    "plan",
    "features",
    "monthly_credits",
    "period_start",
    "period_end",
    "seq",
    "updated_at",
    "spent_expiry",
)
"""Fields of the balance hash (``features`` is ``*`` for all, else a JSON array;
``spent_expiry`` is the apply script's bookkeeping: the earliest ``expires_at`` among grants with
nothing left, ``''`` for none)."""


class LayoutError(ValueError):
    """An account id or prefix cannot be used in a hash-tagged key."""


def check_prefix(prefix: str) -> str:
    """A prefix with braces would move the hash tag off the account id."""
    if "{" in prefix or "}" in prefix:
        raise LayoutError(f"key prefix {prefix!r} must not contain braces")
    return prefix


def check_account(account: str) -> str:
    """An account id must follow the identifier rule (brace-free: it is its own hash tag)."""
    if is_identifier(account):
        return account
    raise LayoutError(f"account_id {identifier_problem(account)}")


def prefix_from_env() -> str:
    return check_prefix(env_value("METERING_REDIS_PREFIX", default=DEFAULT_PREFIX))


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """The four keys of one account, in the order every script takes them."""

    balance: str
    grants: str
    holds: str
    hold_expiry: str

    def as_list(self) -> list[str]:
        return [self.balance, self.grants, self.holds, self.hold_expiry]


def account_keys(prefix: str, account: str) -> AccountKeys:
    """``<prefix>{<account>}:`` + ``bal``/``grants``/``holds`` (hashes), ``holdx`` (zset)."""
    base = f"{prefix}{{{account}}}"
    return AccountKeys(f"{base}:bal", f"{base}:grants", f"{base}:holds", f"{base}:holdx")


def account_from_key(prefix: str, key: str) -> str | None:
    """Inverse of :func:`account_keys` for scans; ``None`` for keys outside the layout."""
    if not key.startswith(prefix + "{"):
        return None
    rest = key[len(prefix) + 1 :]
    account, sep, _ = rest.rpartition("}:")
    return account if sep else None


def _escaped(prefix: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)


def balance_pattern(prefix: str) -> str:
    """SCAN pattern matching every balance hash under ``prefix``."""
    return _escaped(prefix) + "{*}:bal"


def account_pattern(prefix: str) -> str:
    """SCAN pattern matching every projection key under ``prefix``."""
    return _escaped(prefix) + "{*}:*"


def sentinel_key(prefix: str, topic: str, partition: int) -> str:
    """The marker of one ledger partition being in Redis (``projections.self_heal``).

    One key per partition, so each consumer of the group watches the partitions it owns;
    a plain single key (no hash tag, outside the account layout): scans of account keys never
    see it, and it is never used in a script with account keys (Cluster).
    """
    return f"{prefix}projection:{topic}:{partition}"


def sentinel_pattern(prefix: str) -> str:
    """SCAN pattern matching every sentinel key under ``prefix``."""
    return _escaped(prefix) + "projection:*"


HOLD_SEP = ":"


def hold_account(hold_id: str) -> str:
    """Hold ids are ``<32 hex>:<account>`` so commit/release find the account's keys."""
    token, sep, account = hold_id.partition(HOLD_SEP)
    if not sep or len(token) != 32 or not account:
        raise LayoutError(f"malformed hold id {hold_id!r}")
    return check_account(account)
