"""The sidecar's OpenAPI 3.1 document. Request bodies are generated from the request models
(``projections.requests``) that parse them; responses are written out here.

It lists every status code each route can answer, and the schema of every answer, because
the schemathesis test (``tests/integration/projections/test_sidecar_fuzz.py``) validates the
sidecar's responses against it.

Limits the document states but JSON Schema cannot fully express:

* identifiers (``account_id``, ``feature``, the account part of a hold id) are 1..256 UTF-8
  *bytes* without ``{`` or ``}``; ``maxLength`` counts characters, so a 256-character id with
  multi-byte characters is still answered 422;
* a request body over :data:`MAX_BODY_BYTES` is answered 413 before it is parsed, whether its
  size is declared by ``Content-Length`` or it is streamed (chunked) past the limit;
* the API key is checked before the body is read: a request without a valid key is answered
  401 and its body is never consumed.
"""

from __future__ import annotations

from typing import Any

from metering.domain.identifiers import MAX_ID_BYTES as MAX_IDENTIFIER_BYTES
from projections.requests import (
    MAX_BODY_BYTES,
    CheckRequest,
    CommitRequest,
    RequestBody,
    ReserveRequest,
    identifier_schema,
)

_MICROS_OUT = {"type": "integer", "minimum": 0, "description": "micro-credits (1 credit = 1e6)"}


def _error(*codes: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "enum": list(codes)},
            "message": {"type": "string"},
        },
    }


_REASONS = [
    "ok",
    "insufficient_credits",
    "unknown_account",
    "unknown_feature",
    "feature_not_in_plan",
    "duplicate_hold_id",
    "redis_unavailable_fail_open",
    "redis_unavailable_fail_closed",
]
_DECISION_FIELDS = [
    "allowed",
    "reason",
    "available",
    "reserved",
    "overage_used",
    "overage_limit",
    "policy",
    "spendable",
    "plan",
    "seq",
    "hold_id",
    "degraded",
]
_DECISION: dict[str, Any] = {
    "type": "object",
    "required": _DECISION_FIELDS,
    "properties": {
        "allowed": {"type": "boolean"},
        "reason": {"type": "string", "enum": _REASONS},
        "available": _MICROS_OUT,
        "reserved": _MICROS_OUT,
        "overage_used": _MICROS_OUT,
        "overage_limit": _MICROS_OUT,
        "policy": {"type": ["string", "null"], "enum": ["block", "allow", "unlimited", None]},
        "spendable": {
            "type": ["integer", "null"],
            "description": "what the account can still spend; null = unlimited overage "
            "(never null on a degraded answer: 0 there)",
        },
        "plan": {"type": ["string", "null"]},
        "seq": {"type": "integer", "minimum": 0, "description": "ledger seq applied"},
        "hold_id": {"type": ["string", "null"]},
        "degraded": {
            "type": "boolean",
            "description": "true when Redis was unreachable and the fail mode answered",
        },
    },
}
_DEGRADED_SPENDABLE_0: dict[str, Any] = {
    "if": {"properties": {"degraded": {"const": True}}},
    "then": {"properties": {"spendable": {"const": 0}}},
}
"""A degraded answer never says "unlimited" (null): it knows nothing, so spendable is 0."""
_CHECK_DECISION: dict[str, Any] = {
    "allOf": [_DECISION, {"properties": {"hold_id": {"type": "null"}}}, _DEGRADED_SPENDABLE_0],
}
_HELD: dict[str, Any] = {
    "description": "held: allowed, a real hold id, never degraded",
    "allOf": [
        _DECISION,
        {
            "properties": {
                "allowed": {"const": True},
                "hold_id": {"type": "string", "minLength": 1},
                "degraded": {"const": False},
            }
        },
    ],
}
_NOT_HELD: dict[str, Any] = {
    "description": "no hold: denied, or degraded (then spendable is 0, never null)",
    "allOf": [
        _DECISION,
        {"properties": {"hold_id": {"type": "null"}}},
        {**_DEGRADED_SPENDABLE_0, "else": {"properties": {"allowed": {"const": False}}}},
    ],
}
_GRANT = {
    "type": "object",
    "required": [
        "grant_id",
        "source",
        "remaining",
        "amount",
        "priority",
        "expires_at",
        "effective_at",
    ],
    "properties": {
        "grant_id": {"type": "string"},
        "source": {"type": "string"},
        "remaining": _MICROS_OUT,
        "amount": _MICROS_OUT,
        "priority": {"type": "integer"},
        "expires_at": {"type": ["integer", "null"], "description": "epoch ms"},
        "effective_at": {"type": "integer", "description": "epoch ms"},
    },
}
_BALANCE = {
    "type": "object",
    "required": [
        "account_id",
        "available",
        "reserved",
        "overage_used",
        "overage_limit",
        "policy",
        "plan",
        "features",
        "period_start",
        "period_end",
        "seq",
        "updated_at",
        "grants",
    ],
    "properties": {
        "account_id": {"type": "string"},
        "available": _MICROS_OUT,
        "reserved": _MICROS_OUT,
        "overage_used": _MICROS_OUT,
        "overage_limit": _MICROS_OUT,
        "policy": {"type": "string", "enum": ["block", "allow", "unlimited"]},
        "plan": {"type": "string"},
        "features": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "null = every feature",
        },
        "period_start": {"type": "integer", "description": "epoch ms"},
        "period_end": {"type": "integer", "description": "renewal date, epoch ms"},
        "seq": {"type": "integer", "minimum": 0},
        "updated_at": {"type": "integer", "description": "epoch ms"},
        "grants": {"type": "array", "items": _GRANT},
        "monthly_credits": {**_MICROS_OUT, "description": "the plan's credits per period"},
        "spendable": {
            "type": ["integer", "null"],
            "description": "what a check would allow now, micro-credits; null = unlimited",
        },
    },
}
_COMMITTED = {
    "type": "object",
    "required": ["hold_id", "status", "actual", "committed", "held_back"],
    "properties": {
        "hold_id": {"type": "string"},
        "status": {"const": "committed"},
        "actual": {**_MICROS_OUT, "description": "the actual cost as requested"},
        "committed": {
            **_MICROS_OUT,
            "description": "what stays reserved until the ledger debit lands: the actual, but "
            "at most what the account can spend (available - other holds + overage headroom)",
        },
        "held_back": {**_MICROS_OUT, "description": "actual - committed"},
    },
}
_RELEASED = {
    "type": "object",
    "required": ["hold_id", "status"],
    "properties": {"hold_id": {"type": "string"}, "status": {"const": "released"}},
}
_HEALTH = {
    "type": "object",
    "required": ["status", "redis", "fail_mode", "breaker"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "redis": {"type": "boolean", "description": "Redis answered a PING"},
        "fail_mode": {"type": "string", "enum": ["closed", "open", "auto"]},
        "breaker": {
            "type": "string",
            "enum": ["closed", "open", "half_open"],
            "description": "circuit breaker in front of Redis (open: answering per fail mode)",
        },
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, **_json(schema)}


def _body(model: type[RequestBody]) -> dict[str, Any]:
    """A request body, generated from the request model that parses it."""
    schema = model.json_schema()
    return {
        "required": True,
        "description": f"a JSON object of at most {MAX_BODY_BYTES} bytes (else 413)",
        **_json(schema),
    }


_400 = {
    "400": _response(
        "body is not a JSON object (or nested too deep); `client_disconnected` if the body "
        "never arrived (the client is gone, so nobody reads that one)",
        _error("invalid_json", "client_disconnected"),
    )
}
_401 = {
    "401": {
        **_response(
            "missing or wrong API key; answered before the body is read",
            _error("unauthorized"),
        ),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    }
}
_404_HOLD = {
    "404": _response(
        "no such hold: unknown, expired, or made with another service's key",
        _error("hold_not_found"),
    )
}
_409 = {
    "409": _response(
        "the hold was settled differently: committed with another actual, or committed vs released",
        _error("hold_conflict"),
    )
}
_413 = {
    "413": _response(
        f"request body over {MAX_BODY_BYTES} bytes (declared or streamed)",
        _error("payload_too_large"),
    )
}
_422 = {
    "422": _response(
        "a field (or path parameter) is missing, of the wrong type, out of range, or an "
        "identifier breaks the rule",
        _error("invalid_request"),
    )
}
_503 = {"503": _response("Redis unreachable; retry", _error("redis_unavailable"))}

_HOLD_PARAM = [
    {
        "name": "hold_id",
        "in": "path",
        "required": True,
        "description": "`<32 hex>:<account_id>` as returned by POST /v1/reservations; the "
        "account part follows the identifier rule",
        "schema": {
            "type": "string",
            "minLength": 34,
            "maxLength": 33 + MAX_IDENTIFIER_BYTES,
            "pattern": "^[0-9a-f]{32}:[^{}]+$",
        },
    }
]

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "metering enforcement sidecar",
        "version": "1.1.0",
        "description": "Ask before an AI request runs. Amounts are integer micro-credits "
        f"(0..2^53-1). Send the key as `X-API-Key: <key>` or `Authorization: Bearer <key>`. "
        f"Request bodies are at most {MAX_BODY_BYTES} bytes (413). Identifiers are 1.."
        f"{MAX_IDENTIFIER_BYTES} UTF-8 bytes without braces (422). When Redis is unreachable "
        "check and reserve answer per the fail mode with `degraded: true`.",
    },
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
    },
    "security": [{"apiKey": []}, {"bearer": []}],
    "paths": {
        "/v1/check": {
            "post": {
                "summary": "May the account spend this much on this feature?",
                "operationId": "check",
                "requestBody": _body(CheckRequest),
                "responses": {
                    "200": _response("decision (also when degraded)", _CHECK_DECISION),
                    **_400,
                    **_401,
                    **_413,
                    **_422,
                },
            }
        },
        "/v1/reservations": {
            "post": {
                "summary": "Hold an amount atomically until commit, release or TTL",
                "operationId": "reserve",
                "requestBody": _body(ReserveRequest),
                "responses": {
                    "201": _response("held; hold_id set", _HELD),
                    "200": _response(
                        "not held: denied (see reason), or degraded (hold_id null, "
                        "spendable 0; allowed per the fail mode)",
                        _NOT_HELD,
                    ),
                    **_400,
                    **_401,
                    **_413,
                    **_422,
                },
            }
        },
        "/v1/reservations/{hold_id}/commit": {
            "post": {
                "summary": "The request ran and cost `actual`",
                "description": "Idempotent: the same actual again answers the same; another "
                "actual, or a commit after a release, is 409.",
                "operationId": "commit",
                "parameters": _HOLD_PARAM,
                "requestBody": _body(CommitRequest),
                "responses": {
                    "200": _response("committed", _COMMITTED),
                    **_400,
                    **_401,
                    **_404_HOLD,
                    **_409,
                    **_413,
                    **_422,
                    **_503,
                },
            }
        },
        "/v1/reservations/{hold_id}/release": {
            "post": {
                "summary": "The request did not run: give the hold back",
                "description": "Idempotent: releasing a released hold answers the same; "
                "releasing a committed hold is 409. No body is needed.",
                "operationId": "release",
                "parameters": _HOLD_PARAM,
                "responses": {
                    "200": _response("released", _RELEASED),
                    **_401,
                    **_404_HOLD,
                    **_409,
                    **_413,
                    **_422,
                    **_503,
                },
            }
        },
        "/v1/accounts/{account_id}/balance": {
            "get": {
                "summary": "Balance, grants, overage and renewal date",
                "operationId": "balance",
                "parameters": [
                    {
                        "name": "account_id",
                        "in": "path",
                        "required": True,
                        "schema": identifier_schema("account_id"),
                    }
                ],
                "responses": {
                    "200": _response("balance", _BALANCE),
                    **_401,
                    "404": _response("unknown account", _error("unknown_account")),
                    **_422,
                    **_503,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness, Redis reachability and the circuit breaker's state",
                "operationId": "health",
                "security": [],
                "responses": {
                    "200": _response("Redis answers", _HEALTH),
                    "503": _response("Redis unreachable", _HEALTH),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: breaker state, Redis failures, degraded answers",
                "operationId": "metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": _response("OpenAPI 3.1 document", {"type": "object"})},
            }
        },
    },
}
