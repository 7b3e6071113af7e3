"""The sidecar's request bodies: one parser each, shared by its fast path and its routes.

Every rule a request must meet lives here (types, the identifier rule, amount and TTL ranges),
and each breach is a :class:`BadRequest` naming the field, so the fast ``/v1/check`` path and
the Starlette routes can never accept different things, and bad input is refused before Redis
(or the circuit breaker) is asked anything. Each model declares its body once, as
:class:`FieldRule` values: the parser and the OpenAPI schema of the body (``json_schema``, used
by ``projections.openapi``) both come from that declaration.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from starlette.responses import JSONResponse, Response

from metering.domain.identifiers import MAX_ID_BYTES, identifier_problem, is_identifier
from projections.enforcement import MAX_AMOUNT, MAX_TTL_S, EnforcementError, check_amount

MAX_BODY_BYTES = 65_536
"""Largest request body accepted (bytes); larger is 413 ``payload_too_large``."""


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


def identifier_schema(what: str) -> dict[str, Any]:
    """JSON Schema of an identifier (the byte limit itself is checked by the parser)."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_BYTES,
        "pattern": "^[^{}]+$",
        "description": f"{what}: 1..{MAX_ID_BYTES} UTF-8 bytes, no `{{` or `}}` "
        "(maxLength counts characters; the byte limit is enforced, 422)",
    }


def _micros_schema(minimum: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": minimum,
        "maximum": MAX_AMOUNT,
        "description": "micro-credits (1 credit = 1e6)",
    }


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One body field: how it is parsed (raising :class:`BadRequest`) and its JSON Schema."""

    name: str
    parse: Callable[[Mapping[str, Any]], Any]
    schema: dict[str, Any]
    required: bool = True


def _identifier_field(name: str) -> FieldRule:
    return FieldRule(
        name, lambda d: identifier(name, _field(d, name, str)), identifier_schema(name)
    )


def _micros_field(name: str, *, allow_zero: bool = True) -> FieldRule:
    return FieldRule(
        name,
        lambda d: _amount(d, name, allow_zero=allow_zero),
        _micros_schema(0 if allow_zero else 1),
    )


_FEATURE_FIELD = FieldRule(
    "feature",
    _feature,
    {
        **identifier_schema("feature"),
        "type": ["string", "null"],
        "description": "a feature the price book prices (else `unknown_feature`); null = no "
        f"feature. 1..{MAX_ID_BYTES} UTF-8 bytes, no `{{` or `}}`",
    },
    required=False,
)


def _ttl(data: Mapping[str, Any]) -> float:
    ttl_s: float = _field(data, "ttl_s", (int, float))
    if not 0 < ttl_s <= MAX_TTL_S:
        raise BadRequest(422, "invalid_request", f"ttl_s must be in (0, {MAX_TTL_S:g}] seconds")
    return ttl_s


_TTL_FIELD = FieldRule(
    "ttl_s", _ttl, {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL_S}
)


class RequestBody:
    """Parsing and schema from ``FIELDS`` (in the dataclass's field order)."""

    FIELDS: ClassVar[tuple[FieldRule, ...]] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(*(rule.parse(data) for rule in cls.FIELDS))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [rule.name for rule in cls.FIELDS if rule.required],
            "properties": {rule.name: rule.schema for rule in cls.FIELDS},
        }


@dataclass(frozen=True, slots=True)
class CheckRequest(RequestBody):
    """``POST /v1/check``."""

    account_id: str
    feature: str | None
    estimated_credits: int

    FIELDS = (
        _identifier_field("account_id"),
        _FEATURE_FIELD,
        _micros_field("estimated_credits"),
    )


@dataclass(frozen=True, slots=True)
class ReserveRequest(RequestBody):
    """``POST /v1/reservations``."""

    account_id: str
    amount: int
    ttl_s: float
    feature: str | None

    FIELDS = (
        _identifier_field("account_id"),
        _micros_field("amount", allow_zero=False),
        _TTL_FIELD,
        _FEATURE_FIELD,
    )


@dataclass(frozen=True, slots=True)
class CommitRequest(RequestBody):
    """``POST /v1/reservations/{hold_id}/commit``."""

    actual: int

    FIELDS = (_micros_field("actual"),)


def declared_in_order(model: type[Any]) -> bool:
    """Whether ``model.FIELDS`` names the dataclass's fields, in order (a test holds it)."""
    return [rule.name for rule in model.FIELDS] == [f.name for f in fields(model)]
