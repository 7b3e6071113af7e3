"""UsageEvent validation: pure, runs before encoding so a bad event never reaches Kafka.

Bounds keep one noisy producer from bloating the topic, the processor's state or the
ClickHouse tables (strings and maps are copied into every downstream row).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

from metering.domain.identifiers import identifier_problem, is_identifier
from metering.sdk.errors import InvalidUsageEvent

MAX_ID_CHARS = 128
MAX_NAME_CHARS = 64
MAX_SOURCE_CHARS = 128
MAX_ATTRIBUTE_VALUE_CHARS = 256
MAX_UNITS = 16
MAX_ATTRIBUTES = 32
MAX_UNIT_VALUE = 10**12
MIN_OCCURRED_AT = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_OCCURRED_AT = 4_102_444_800_000  # 2100-01-01T00:00:00Z


class UsageEventDict(TypedDict):
    """The UsageEvent record as a plain dict (optional keys take the schema's defaults)."""

    event_id: str
    account_id: str
    feature: str
    units: Mapping[str, int]
    occurred_at: int
    subject: NotRequired[str]
    model: NotRequired[str | None]
    source: NotRequired[str]
    attributes: NotRequired[Mapping[str, str]]
    reservation_id: NotRequired[str | None]


KNOWN_FIELDS = frozenset(UsageEventDict.__annotations__)


def _text(field: str, value: Any, max_chars: int, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidUsageEvent(field, f"must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidUsageEvent(field, "must not be empty")
    if len(value) > max_chars:
        raise InvalidUsageEvent(field, f"longer than {max_chars} characters ({len(value)})")


def _map_key(field: str, key: Any) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_NAME_CHARS:
        raise InvalidUsageEvent(
            field, f"keys must be non-empty strings of at most {MAX_NAME_CHARS} chars: {key!r}"
        )


def _fields(event: Any) -> None:
    """Slow path: say precisely what is wrong with the event's container or keys."""
    if not isinstance(event, Mapping):
        raise InvalidUsageEvent("event", f"must be a mapping, got {type(event).__name__}")
    unknown = sorted(str(k) for k in event.keys() - KNOWN_FIELDS)
    if unknown:
        raise InvalidUsageEvent(unknown[0], "unknown field")


def _units(units: Any) -> None:
    if not isinstance(units, Mapping):
        raise InvalidUsageEvent("units", f"must be a mapping, got {type(units).__name__}")
    if not 0 < len(units) <= MAX_UNITS:
        raise InvalidUsageEvent("units", f"must hold 1..{MAX_UNITS} entries, has {len(units)}")
    for name, quantity in units.items():
        _map_key("units", name)
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise InvalidUsageEvent(
                f"units[{name!r}]", f"must be an integer, got {type(quantity).__name__}"
            )
        if not 0 <= quantity <= MAX_UNIT_VALUE:
            raise InvalidUsageEvent(
                f"units[{name!r}]", f"must be in 0..{MAX_UNIT_VALUE}, got {quantity}"
            )


def _attributes(attributes: Any) -> None:
    if not isinstance(attributes, Mapping):
        raise InvalidUsageEvent("attributes", f"must be a mapping, got {type(attributes).__name__}")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidUsageEvent(
            "attributes", f"more than {MAX_ATTRIBUTES} entries ({len(attributes)})"
        )
    for key, value in attributes.items():
        _map_key("attributes", key)
        _text(f"attributes[{key!r}]", value, MAX_ATTRIBUTE_VALUE_CHARS, allow_empty=True)


def _occurred_at(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidUsageEvent(
            "occurred_at", f"must be int epoch milliseconds, got {type(value).__name__}"
        )
    if not MIN_OCCURRED_AT <= value <= MAX_OCCURRED_AT:
        raise InvalidUsageEvent("occurred_at", f"{value} is outside 2000..2100 in epoch ms")


def validate_usage_event(event: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidUsageEvent` naming the first problem; return None if valid.

    Written as one fast path of cheap exact-type checks (the SDK calls it ~100k times a
    second); anything unusual falls through to a slow path that explains the problem.
    """
    if type(event) is not dict or not KNOWN_FIELDS.issuperset(event):
        _fields(event)
    get = event.get
    value = get("event_id")
    if not (type(value) is str and 0 < len(value) <= MAX_ID_CHARS):
        _required(event, "event_id")
        _text("event_id", value, MAX_ID_CHARS)
    value = get("account_id")
    if not is_identifier(value):
        _required(event, "account_id")
        problem = identifier_problem(value)  # None for an unusual but valid str subclass
        if problem is not None:
            raise InvalidUsageEvent("account_id", problem)
    value = get("feature")
    if not (type(value) is str and 0 < len(value) <= MAX_NAME_CHARS):
        _required(event, "feature")
        _text("feature", value, MAX_NAME_CHARS)
    value = get("occurred_at")
    if not (type(value) is int and MIN_OCCURRED_AT <= value <= MAX_OCCURRED_AT):
        _required(event, "occurred_at")
        _occurred_at(value)
    units = get("units")
    if type(units) is dict and 0 < len(units) <= MAX_UNITS:
        for name, quantity in units.items():
            if not (
                type(name) is str
                and 0 < len(name) <= MAX_NAME_CHARS
                and type(quantity) is int
                and 0 <= quantity <= MAX_UNIT_VALUE
            ):
                _units(units)
    else:
        _required(event, "units")
        _units(units)
    value = get("subject", "default")
    if not (type(value) is str and 0 < len(value) <= MAX_NAME_CHARS):
        _text("subject", value, MAX_NAME_CHARS)
    value = get("model")
    if value is not None and not (type(value) is str and 0 < len(value) <= MAX_ID_CHARS):
        _text("model", value, MAX_ID_CHARS)
    value = get("source", "")
    if not (type(value) is str and len(value) <= MAX_SOURCE_CHARS):
        _text("source", value, MAX_SOURCE_CHARS, allow_empty=True)
    value = get("reservation_id")
    if value is not None:
        _text("reservation_id", value, MAX_ID_CHARS)
    attributes = get("attributes")
    if attributes:
        if type(attributes) is dict and len(attributes) <= MAX_ATTRIBUTES:
            for key, value in attributes.items():
                if not (
                    type(key) is str
                    and 0 < len(key) <= MAX_NAME_CHARS
                    and type(value) is str
                    and len(value) <= MAX_ATTRIBUTE_VALUE_CHARS
                ):
                    _attributes(attributes)
        else:
            _attributes(attributes)
    elif attributes is not None or "attributes" in event:
        _attributes(attributes)  # falsy: fine if an empty mapping, else says what it is


def _required(event: Mapping[str, Any], field: str) -> None:
    if field not in event:
        raise InvalidUsageEvent(field, "required field is missing")
