"""The sidecar's OpenAPI 3.1 document (hand-written: the API is small and stable)."""

from __future__ import annotations

from typing import Any

_MICROS = {"type": "integer", "minimum": 0, "description": "micro-credits (1 credit = 1e6)"}
_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_DECISION = {
    "type": "object",
    "properties": {
        "allowed": {"type": "boolean"},
        "reason": {
            "type": "string",
            "enum": [
                "ok",
                "insufficient_credits",
                "unknown_account",
                "feature_not_in_plan",
                "redis_unavailable_fail_open",
                "redis_unavailable_fail_closed",
            ],
        },
        "available": _MICROS,
        "reserved": _MICROS,
        "overage_used": _MICROS,
        "overage_limit": _MICROS,
        "policy": {"type": ["string", "null"], "enum": ["block", "allow", "unlimited", None]},
        "spendable": {"type": ["integer", "null"], "description": "null = unlimited overage"},
        "plan": {"type": ["string", "null"]},
        "seq": {"type": "integer", "description": "ledger seq the projection has applied"},
        "hold_id": {"type": ["string", "null"]},
        "degraded": {"type": "boolean", "description": "answered by the fail mode"},
    },
}
_GRANT = {
    "type": "object",
    "properties": {
        "grant_id": {"type": "string"},
        "source": {"type": "string"},
        "remaining": _MICROS,
        "amount": _MICROS,
        "priority": {"type": "integer"},
        "expires_at": {"type": ["integer", "null"], "description": "epoch ms"},
        "effective_at": {"type": "integer"},
    },
}
_BALANCE = {
    "type": "object",
    "properties": {
        "account_id": {"type": "string"},
        "available": _MICROS,
        "reserved": _MICROS,
        "overage_used": _MICROS,
        "overage_limit": _MICROS,
        "policy": {"type": "string"},
        "plan": {"type": "string"},
        "features": {"type": ["array", "null"], "items": {"type": "string"}},
        "period_start": {"type": "integer"},
        "period_end": {"type": "integer", "description": "renewal date, epoch ms"},
        "seq": {"type": "integer"},
        "updated_at": {"type": "integer"},
        "grants": {"type": "array", "items": _GRANT},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _body(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": props}
    return {"required": True, **_json(schema)}


_ERRORS = {
    "400": {"description": "malformed JSON", **_json(_ERROR)},
    "401": {"description": "missing or wrong API key", **_json(_ERROR)},
    "422": {"description": "invalid field", **_json(_ERROR)},
}
_HOLD_PARAM = [{"name": "hold_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_SETTLED = {"type": "object", "properties": {"hold_id": {"type": "string"}, "status": {}}}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "metering enforcement sidecar",
        "version": "1.0.0",
        "description": "Ask before an AI request runs. Amounts are integer micro-credits. "
        "Send the key as `X-API-Key: <key>` or `Authorization: Bearer <key>`.",
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
                "requestBody": _body(
                    ["account_id", "estimated_credits"],
                    {
                        "account_id": {"type": "string"},
                        "feature": {"type": ["string", "null"]},
                        "estimated_credits": _MICROS,
                    },
                ),
                "responses": {"200": {"description": "decision", **_json(_DECISION)}, **_ERRORS},
            }
        },
        "/v1/reservations": {
            "post": {
                "summary": "Hold an amount atomically until commit, release or TTL",
                "requestBody": _body(
                    ["account_id", "amount", "ttl_s"],
                    {
                        "account_id": {"type": "string"},
                        "amount": _MICROS,
                        "ttl_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                        "feature": {"type": ["string", "null"]},
                    },
                ),
                "responses": {
                    "201": {"description": "held; hold_id set", **_json(_DECISION)},
                    "200": {"description": "denied; see reason", **_json(_DECISION)},
                    **_ERRORS,
                },
            }
        },
        "/v1/reservations/{hold_id}/commit": {
            "post": {
                "summary": "The request ran and cost `actual`",
                "parameters": _HOLD_PARAM,
                "requestBody": _body(["actual"], {"actual": _MICROS}),
                "responses": {
                    "200": {"description": "committed", **_json(_SETTLED)},
                    "404": {"description": "expired or already settled", **_json(_ERROR)},
                    "503": {"description": "Redis unreachable", **_json(_ERROR)},
                    **_ERRORS,
                },
            }
        },
        "/v1/reservations/{hold_id}/release": {
            "post": {
                "summary": "The request did not run: give the hold back",
                "parameters": _HOLD_PARAM,
                "responses": {
                    "200": {"description": "released", **_json(_SETTLED)},
                    "404": {"description": "expired or already settled", **_json(_ERROR)},
                    "503": {"description": "Redis unreachable", **_json(_ERROR)},
                    **_ERRORS,
                },
            }
        },
        "/v1/accounts/{account_id}/balance": {
            "get": {
                "summary": "Balance, grants, overage and renewal date",
                "parameters": [
                    {
                        "name": "account_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "balance", **_json(_BALANCE)},
                    "404": {"description": "unknown account", **_json(_ERROR)},
                    "503": {"description": "Redis unreachable", **_json(_ERROR)},
                    **_ERRORS,
                },
            }
        },
    },
}
