"""The UsageReporter's hot path: validate and encode a UsageEvent in one pass.

Separate validation + encoding walks the event twice (~3 us); this walks it once, checking
each value with cheap exact-type tests as it encodes it. Anything that fails a fast check
(or is merely unusual, such as a ``str`` subclass) goes to the slow path: the reference
validator, which raises :class:`InvalidUsageEvent` with the precise reason, then the
codec's own encoder. So the fast path can only ever accept a subset of what the reference
validator accepts, and tests hold its bytes equal to fastavro's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from metering.avro.usage_encoder import _SMALL, _TABLE_LIMIT, encode_long, encode_string
from metering.sdk.validation import (
    KNOWN_FIELDS,
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_ATTRIBUTES,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_OCCURRED_AT,
    MAX_SOURCE_CHARS,
    MAX_UNIT_VALUE,
    MAX_UNITS,
    MIN_OCCURRED_AT,
)

_CACHE_MAX_ENTRIES = 100_000
_CACHE_MAX_CHARS = 256

Encoder = Callable[[Mapping[str, Any]], bytes]


def make_checked_encoder(header: bytes, slow_path: Encoder) -> Encoder:
    """``encode(event) -> framed bytes``; ``slow_path`` validates (raising) and encodes."""
    small = _SMALL
    half = _TABLE_LIMIT >> 1  # values below this have a table entry; all limits are below it
    str_cache: dict[str, bytes] = {}
    cache_get = str_cache.get
    long_cache: dict[int, bytes] = {}
    long_get = long_cache.get
    known = KNOWN_FIELDS.issuperset
    null, some, empty_map = b"\x00", b"\x02", b"\x00"

    def miss(s: str) -> bytes:
        enc = encode_string(s)
        if len(s) <= _CACHE_MAX_CHARS:
            if len(str_cache) >= _CACHE_MAX_ENTRIES:
                str_cache.clear()
            str_cache[s] = enc
        return enc

    union_cache: dict[str, bytes] = {}
    union_get = union_cache.get

    def union_miss(s: str) -> bytes:
        """A ``["null", "string"]`` value: branch index 1, then the string."""
        enc = some + (cache_get(s) or miss(s))
        if len(union_cache) < _CACHE_MAX_ENTRIES:
            union_cache[s] = enc
        return enc

    def long_miss(n: int) -> bytes:
        enc = encode_long(n)
        if len(long_cache) >= 4096:
            long_cache.clear()
        long_cache[n] = enc
        return enc

    def encode(event: Mapping[str, Any]) -> bytes:
        if type(event) is not dict or not known(event):
            return slow_path(event)
        get = event.get
        event_id = get("event_id")
        account_id = get("account_id")
        feature = get("feature")
        ts = get("occurred_at")
        units = get("units")
        subject = get("subject", "default")
        source = get("source", "")
        if not (
            type(event_id) is str
            and 0 < len(event_id) <= MAX_ID_CHARS
            and type(account_id) is str
            and 0 < len(account_id) <= MAX_ID_CHARS
            and type(feature) is str
            and 0 < len(feature) <= MAX_NAME_CHARS
            and type(ts) is int
            and MIN_OCCURRED_AT <= ts <= MAX_OCCURRED_AT
            and type(subject) is str
            and 0 < len(subject) <= MAX_NAME_CHARS
            and type(source) is str
            and len(source) <= MAX_SOURCE_CHARS
            and type(units) is dict
            and 0 < len(units) <= MAX_UNITS
        ):
            return slow_path(event)

        model = get("model")
        if model is None:
            model_enc = null
        elif type(model) is str and 0 < len(model) <= MAX_ID_CHARS:
            model_enc = union_get(model) or union_miss(model)
        else:
            return slow_path(event)
        reservation = get("reservation_id")
        if not (
            reservation is None
            or (type(reservation) is str and 0 < len(reservation) <= MAX_ID_CHARS)
        ):
            return slow_path(event)

        # One list, one join: every piece below is already-encoded bytes.
        id_bytes = event_id.encode()
        parts = [
            header,
            small[len(id_bytes) << 1],  # <= 4 * MAX_ID_CHARS bytes: in the table
            id_bytes,
            cache_get(account_id) or miss(account_id),
            cache_get(subject) or miss(subject),
            cache_get(feature) or miss(feature),
            model_enc,
            small[len(units) << 1],
        ]
        append = parts.append
        for name, quantity in units.items():
            if not (
                type(name) is str
                and 0 < len(name) <= MAX_NAME_CHARS
                and type(quantity) is int
                and 0 <= quantity <= MAX_UNIT_VALUE
            ):
                return slow_path(event)
            append(cache_get(name) or miss(name))
            append(
                small[quantity << 1]
                if quantity < half
                else long_get(quantity) or long_miss(quantity)
            )
        append(empty_map)
        append(long_get(ts) or long_miss(ts))
        append(cache_get(source) or miss(source))

        attributes = get("attributes")
        if attributes:
            if type(attributes) is not dict or len(attributes) > MAX_ATTRIBUTES:
                return slow_path(event)
            append(small[len(attributes) << 1])
            for key, value in attributes.items():
                if not (
                    type(key) is str
                    and 0 < len(key) <= MAX_NAME_CHARS
                    and type(value) is str
                    and len(value) <= MAX_ATTRIBUTE_VALUE_CHARS
                ):
                    return slow_path(event)
                append(cache_get(key) or miss(key))
                append(cache_get(value) or miss(value))
            append(empty_map)
        elif not (type(attributes) is dict or (attributes is None and "attributes" not in event)):
            return slow_path(event)
        else:
            append(empty_map)

        if reservation is None:
            append(null)
        else:
            append(some)
            append(encode_string(reservation))
        return b"".join(parts)

    return encode
