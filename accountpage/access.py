"""Who may see which account on the account page.

An account key sees only its own account; the admin key sees every account. Keys come from
``METERING_ACCOUNT_KEYS=acct:key,...`` and ``METERING_ADMIN_KEY``. Every presented key is
compared with every configured key in constant time, so timing does not reveal a prefix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from metering.auth import key_owner
from metering.config import env_value


class AccessConfigError(ValueError):
    """The key variables are malformed (fails the start, never a request)."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The caller: ``account`` is None for the admin."""

    account: str | None

    @property
    def is_admin(self) -> bool:
        return self.account is None

    def may_see(self, account: str) -> bool:
        return self.account is None or self.account == account


def parse_account_keys(value: str) -> dict[str, str]:
    """``acct:key,acct2:key2`` -> {account: key}. The account is before the first ``:``."""
    keys: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        account, sep, key = item.partition(":")
        if not sep or not account.strip() or not key.strip():
            raise AccessConfigError("METERING_ACCOUNT_KEYS: expected account:key[,account:key...]")
        keys[account.strip()] = key.strip()
    return keys


class AccessControl:
    """Maps a presented key to a :class:`Viewer` (or None)."""

    def __init__(self, account_keys: Mapping[str, str], admin_key: str | None) -> None:
        self._keys: list[tuple[Viewer, bytes]] = [
            (Viewer(account), key.encode("utf-8")) for account, key in account_keys.items()
        ]
        if admin_key:
            self._keys.append((Viewer(None), admin_key.encode("utf-8")))
        if not self._keys:
            raise AccessConfigError(
                "the account page needs METERING_ADMIN_KEY and/or METERING_ACCOUNT_KEYS"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AccessControl:
        env = os.environ if env is None else env
        return cls(
            parse_account_keys(env_value("METERING_ACCOUNT_KEYS", env)),
            env_value("METERING_ADMIN_KEY", env) or None,
        )

    def viewer(self, presented: str | None) -> Viewer | None:
        return key_owner(presented, self._keys)
