"""The sidecar's request bodies: one parser each, shared by its fast path and its routes.

Every rule a request must meet lives here (types, the identifier rule, amount and TTL ranges),
and each breach is a :class:`BadRequest` naming the field, so the fast ``/v1/check`` path and
the Starlette routes can never accept different things, and bad input is refused before Redis
(or the circuit breaker) is asked anything.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from metering.domain.identifiers import identifier_problem, is_identifier
from projections.enforcement import MAX_TTL_S, EnforcementError, check_amount
from projections.openapi import MAX_BODY_BYTES


class BadRequest(Exception):
    """A request the sidecar refuses: the HTTP status, an error code and a message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def error_response(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse({"error": error, "message": message}, status, headers=headers)


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed the limit (by its
    ``Content-Length``, or while it streams): a large body is never held in memory."""
    too_large = BadRequest(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object, or :class:`BadRequest` (400) for anything else, however it is built."""
    if not raw:
        raise BadRequest(400, "invalid_json", "request body must be a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "invalid_json", "request body must be a JSON object")
    return data


def identifier(name: str, value: object) -> str:
    """``value`` when it follows the identifier rule, else 422 naming the field."""
    if is_identifier(value):
        assert isinstance(value, str)
        return value
    problem = identifier_problem(value) or "is not a valid identifier"
    raise BadRequest(422, "invalid_request", f"{name} {problem}")


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise BadRequest(422, "invalid_request", f"missing field {name!r}")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BadRequest(422, "invalid_request", f"field {name!r} has the wrong type")
    return value


def _amount(data: Mapping[str, Any], name: str, *, allow_zero: bool = True) -> int:
    try:
        return check_amount(name, _field(data, name, int), allow_zero=allow_zero)
    except EnforcementError as exc:
        raise BadRequest(422, "invalid_request", str(exc)) from None


def _feature(data: Mapping[str, Any]) -> str | None:
    value = data.get("feature")
    return None if value is None else identifier("feature", value)


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """``POST /v1/check``."""

    account_id: str
    feature: str | None
    estimated_credits: int

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> CheckRequest:
        return cls(
            identifier("account_id", _field(data, "account_id", str)),
            _feature(data),
            _amount(data, "estimated_credits"),
        )


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """``POST /v1/reservations``."""

    account_id: str
    amount: int
    ttl_s: float
    feature: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ReserveRequest:
        account = identifier("account_id", _field(data, "account_id", str))
        amount = _amount(data, "amount", allow_zero=False)
        ttl_s = _field(data, "ttl_s", (int, float))
        if not 0 < ttl_s <= MAX_TTL_S:
            raise BadRequest(422, "invalid_request", f"ttl_s must be in (0, {MAX_TTL_S:g}] seconds")
        return cls(account, amount, ttl_s, _feature(data))


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """``POST /v1/reservations/{hold_id}/commit``."""

    actual: int

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> CommitRequest:
        return cls(_amount(data, "actual"))
