"""Constant-time API key lookup shared by the sidecar and the account page."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import TypeVar

Owner = TypeVar("Owner")


def key_owner(presented: str | None, keys: Iterable[tuple[Owner, bytes]]) -> Owner | None:
    """The owner of ``presented`` among ``keys``, comparing every key in constant time.

    There is no early exit, so the time taken does not tell which key (if any) matched.
    """
    if not presented:
        return None
    candidate = presented.encode("utf-8")
    found: Owner | None = None
    for owner, key in keys:
        if hmac.compare_digest(candidate, key) and found is None:
            found = owner
    return found


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """The key a caller presents: ``X-API-Key``, else an ``Authorization: Bearer`` token."""
    if api_key is not None:
        return api_key
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
