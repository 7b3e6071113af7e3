"""A specialised Avro binary encoder for the UsageEvent record (the SDK's hot path).

fastavro's generic writer costs ~7 us per event here; this one knows the record's shape,
so it only joins pre-computed pieces: zig-zag varints come from a table for small values,
and repeated strings (account, feature, model, unit names...) are cached already encoded.
It produces byte-for-byte what fastavro writes (a hypothesis test holds it to that), and
the codec only uses it when the writer schema's shape equals :data:`USAGE_EVENT_SHAPE`
(otherwise it logs a warning and uses fastavro; see :mod:`metering.avro.fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from metering.avro.fields import Field
from metering.avro.varint import SMALL, TABLE_LIMIT, encode_long, encode_string

USAGE_EVENT_SHAPE: tuple[Field, ...] = (
    Field("event_id", "string"),
    Field("account_id", "string"),
    Field("subject", "string", "default"),
    Field("feature", "string"),
    Field("model", ["null", "string"], None),
    Field("units", {"type": "map", "values": "long"}),
    Field("occurred_at", "long"),
    Field("source", "string", ""),
    Field("attributes", {"type": "map", "values": "string"}, {}),
    Field("reservation_id", ["null", "string"], None),
)
"""The UsageEvent v1 shape this encoder, ``pipeline.fast_avro``'s decoder and the SDK's fast
path are hand-unrolled for. Written out, not read from the ``.avsc``: it states what the code
assumes, and ``test_usage_event_shape_is_the_committed_schema`` holds it to the schema."""

_CACHE_MAX_ENTRIES = 100_000
_CACHE_MAX_CHARS = 256


def make_usage_event_encoder(header: bytes = b"") -> Callable[[Mapping[str, Any]], bytes]:
    """Return ``encode(event) -> header + avro body`` for the UsageEvent v1 shape.

    Raises ``KeyError`` for a missing required field and ``TypeError``/``AttributeError``/
    ``OverflowError`` for a wrongly typed value (the codec wraps them in ``CodecError``).
    Written for speed: C-level dict lookups (``cache_get(s) or miss(s)``; an encoded string
    is never empty) instead of helper calls, and one ``join`` per record.
    """
    small = SMALL
    half = TABLE_LIMIT >> 1
    str_cache: dict[str, bytes] = {}
    long_cache: dict[int, bytes] = {}
    cache_get = str_cache.get
    long_get = long_cache.get
    null = b"\x00"
    some = b"\x02"
    empty_map = b"\x00"
    empty: dict[str, str] = {}

    def miss(s: str) -> bytes:
        enc = encode_string(s)
        if len(s) <= _CACHE_MAX_CHARS:
            if len(str_cache) >= _CACHE_MAX_ENTRIES:
                str_cache.clear()
            str_cache[s] = enc
        return enc

    def long_miss(n: int) -> bytes:
        # Timestamps repeat within a millisecond and token counts repeat: cache a few thousand.
        enc = encode_long(n)
        if len(long_cache) >= 4096:
            long_cache.clear()
        long_cache[n] = enc
        return enc

    def string_map(items: Mapping[str, str]) -> bytes:
        n = len(items)
        parts = [small[n << 1] if n < half else encode_long(n)]
        for key, value in items.items():
            parts.append(cache_get(key) or miss(key))
            parts.append(cache_get(value) or miss(value))
        parts.append(empty_map)
        return b"".join(parts)

    def encode(event: Mapping[str, Any]) -> bytes:
        get = event.get
        units = event["units"]
        n = len(units)
        if n == 1:
            ((key, value),) = units.items()
            units_enc = b"".join(
                (
                    b"\x02",
                    cache_get(key) or miss(key),
                    small[value << 1] if 0 <= value < half else long_get(value) or long_miss(value),
                    empty_map,
                )
            )
        elif n:
            parts = [small[n << 1] if n < half else encode_long(n)]
            for key, value in units.items():
                parts.append(cache_get(key) or miss(key))
                parts.append(
                    small[value << 1] if 0 <= value < half else long_get(value) or long_miss(value)
                )
            parts.append(empty_map)
            units_enc = b"".join(parts)
        else:
            units_enc = empty_map
        account_id = event["account_id"]
        subject = get("subject", "default")
        feature = event["feature"]
        model = get("model")
        ts = event["occurred_at"]
        source = get("source", "")
        attributes = get("attributes", empty)
        if attributes is None:
            raise TypeError("attributes: expected a map, got None")
        reservation = get("reservation_id")
        event_id = event["event_id"].encode()
        return b"".join(
            (
                header,
                small[len(event_id) << 1] if len(event_id) < half else encode_long(len(event_id)),
                event_id,
                cache_get(account_id) or miss(account_id),
                cache_get(subject) or miss(subject),
                cache_get(feature) or miss(feature),
                null if model is None else some + (cache_get(model) or miss(model)),
                units_enc,
                small[ts << 1] if 0 <= ts < half else long_get(ts) or long_miss(ts),
                cache_get(source) or miss(source),
                string_map(attributes) if attributes else empty_map,
                null if reservation is None else some + encode_string(reservation),
            )
        )

    return encode
