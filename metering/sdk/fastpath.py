"""The UsageReporter's hot path: validate and encode a UsageEvent in one pass.

Separate validation + encoding walks the event twice (~3 us); this walks it once, checking
each value with cheap exact-type tests as it encodes it. Anything that fails a fast check
(or is merely unusual, such as a ``str`` subclass or a missing optional field's
neighbour being a non-dict mapping) goes to the slow path: the reference validator, which
raises :class:`InvalidUsageEvent` with the precise reason, then the codec's own encoder.
So the fast path can only ever accept a subset of what the reference validator accepts,
and tests hold its bytes equal to fastavro's.

Why it is shaped the way it is (each saves a measurable slice of ~2 us per event):
- one ``itemgetter`` call fetches all ten fields; when it finds all ten and the dict has
  exactly ten keys, the key set *is* the schema's, so no separate unknown-key scan;
- strings are looked up in caches that hold only values which already passed their
  length check, so a hit skips it (the exact-type check still runs on every value: a
  non-``str`` that compares equal to a cached string must still be rejected);
- account, subject, feature and model sit next to each other in the record, so their
  encoding is cached as one piece keyed by the 4-tuple;
- constant neighbours are pre-joined (header + event-id length, units-map end +
  timestamp, attributes-map end + null reservation), so ``b"".join`` sees ~12 pieces, not ~21.
Every cache is bounded: it is cleared when full, so a stream of unique values costs a
re-fill, never unbounded memory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from metering.avro import USAGE_EVENT, RegisteredSchema, load_catalog
from metering.avro.fields import fits_shape, record_fields
from metering.avro.usage_encoder import USAGE_EVENT_SHAPE
from metering.avro.varint import SMALL, TABLE_LIMIT, encode_long, encode_string
from metering.domain.identifiers import MAX_ID_BYTES, is_identifier
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

STRING_CACHE_ENTRIES = 100_000
"""Per cache (ids, names, models, sources, attribute values); cleared when full."""
PREFIX_CACHE_ENTRIES = 50_000
"""(account, subject, feature, model) combinations."""
LONG_CACHE_ENTRIES = 4_096
"""Recent timestamps (they repeat within a millisecond) and large unit quantities."""

FIELD_ORDER = (
    *("event_id", "account_id", "subject", "feature", "model"),
    *("units", "occurred_at", "source", "attributes", "reservation_id"),
)
"""The order the encoder below unpacks and writes the fields in: hand-unrolled, so written out;
``test_fast_path_field_order_is_the_committed_schema`` holds it to the ``.avsc``."""
OPTIONAL_DEFAULTS: dict[str, Any] = {
    f.name: copy.deepcopy(f.default) for f in record_fields(USAGE_EVENT) if not f.required
}
"""The schema's defaults, merged into events that leave optional fields out (read once)."""

Encoder = Callable[[Mapping[str, Any]], bytes]


class _Reject(Exception):
    """Internal: leave the fast path; the slow path decides (and explains)."""


def _string_cache(
    min_chars: int,
    max_chars: int,
    prefix: bytes = b"",
    valid: Callable[[Any], bool] | None = None,
) -> tuple[Callable[[Any], bytes | None], Callable[[Any], bytes]]:
    """``(get, miss)`` over a dict of strings that passed the length check (and ``valid``, when
    given) -> their encoding."""
    cache: dict[str, bytes] = {}

    def miss(s: Any) -> bytes:
        if type(s) is not str or not min_chars <= len(s) <= max_chars:
            raise _Reject
        if valid is not None and not valid(s):
            raise _Reject
        enc = prefix + encode_string(s)
        if len(cache) >= STRING_CACHE_ENTRIES:
            cache.clear()
        cache[s] = enc
        return enc

    return cache.get, miss


def _long_cache(
    prefix: bytes = b"",
) -> tuple[Callable[[int], bytes | None], Callable[[int], bytes]]:
    cache: dict[int, bytes] = {}

    def miss(n: int) -> bytes:
        enc = prefix + encode_long(n)
        if len(cache) >= LONG_CACHE_ENTRIES:
            cache.clear()
        cache[n] = enc
        return enc

    return cache.get, miss


def make_checked_encoder(
    header: bytes, slow_path: Encoder, *, writer: RegisteredSchema | None = None
) -> Encoder:
    """``encode(event) -> framed bytes``; ``slow_path`` validates (raising) and encodes.

    ``writer`` is the schema ``header`` names (default: the committed UsageEvent, which is
    what :class:`~metering.avro.AvroCodec` writes with). If its shape is not the one this
    encoder is unrolled for, a warning names the first difference and ``slow_path`` is
    returned as the whole encoder: slower, never wrong bytes.
    """
    if not fits_shape(
        USAGE_EVENT_SHAPE, writer or load_catalog().get(USAGE_EVENT), "SDK usage fast path"
    ):
        return slow_path
    small = SMALL
    half = TABLE_LIMIT >> 1  # values below this have a table entry; all limits are below it
    known = KNOWN_FIELDS.issuperset
    fields = itemgetter(*FIELD_ORDER)
    defaults = OPTIONAL_DEFAULTS
    null, some = b"\x00", b"\x02"
    # header + Avro length of the event id, by UTF-8 byte length (at most 4 per char).
    heads = tuple(header + small[n << 1] for n in range(4 * MAX_ID_CHARS + 1))
    counts = tuple(small[n << 1] for n in range(max(MAX_UNITS, MAX_ATTRIBUTES) + 1))
    attributes_end_no_reservation = null + null

    id_get, id_miss = _string_cache(1, MAX_ID_BYTES, valid=is_identifier)  # the account id
    name_get, name_miss = _string_cache(1, MAX_NAME_CHARS)
    model_get, model_miss = _string_cache(1, MAX_ID_CHARS, some)  # union branch 1
    source_get, source_miss = _string_cache(0, MAX_SOURCE_CHARS)
    value_get, value_miss = _string_cache(0, MAX_ATTRIBUTE_VALUE_CHARS)
    ts_get, ts_miss = _long_cache(null)  # the units map's end, then occurred_at
    big_get, big_miss = _long_cache()

    prefix_cache: dict[tuple[str, str, str, str | None], bytes] = {}
    prefix_get = prefix_cache.get

    def prefix_miss(key: tuple[str, str, str, str | None]) -> bytes:
        account_id, subject, feature, model = key
        enc = b"".join(
            (
                id_get(account_id) or id_miss(account_id),
                name_get(subject) or name_miss(subject),
                name_get(feature) or name_miss(feature),
                null if model is None else model_get(model) or model_miss(model),
            )
        )
        if len(prefix_cache) >= PREFIX_CACHE_ENTRIES:
            prefix_cache.clear()
        prefix_cache[key] = enc
        return enc

    def encode(event: Mapping[str, Any]) -> bytes:
        try:
            if type(event) is dict and len(event) == 10:  # len(FIELD_ORDER), a constant
                # All ten found among ten keys: no unknown field.
                (
                    event_id,
                    account_id,
                    subject,
                    feature,
                    model,
                    units,
                    ts,
                    source,
                    attributes,
                    reservation,
                ) = fields(event)
            elif type(event) is dict and known(event):
                # KeyError: a required field is missing.
                (
                    event_id,
                    account_id,
                    subject,
                    feature,
                    model,
                    units,
                    ts,
                    source,
                    attributes,
                    reservation,
                ) = fields({**defaults, **event})
            else:
                raise _Reject
            if not (
                type(event_id) is str
                and type(account_id) is str
                and type(subject) is str
                and type(feature) is str
                and (model is None or type(model) is str)
                and type(source) is str
                and type(ts) is int
                and type(units) is dict
                and type(attributes) is dict
                and 0 < len(event_id) <= MAX_ID_CHARS
                and MIN_OCCURRED_AT <= ts <= MAX_OCCURRED_AT
                and 0 < len(units) <= MAX_UNITS
                and len(attributes) <= MAX_ATTRIBUTES
            ):
                raise _Reject
            id_bytes = event_id.encode()
            key = (account_id, subject, feature, model)
            parts = [heads[len(id_bytes)], id_bytes, prefix_get(key) or prefix_miss(key)]
            append = parts.append
            append(counts[len(units)])
            for name, quantity in units.items():
                if type(name) is not str or type(quantity) is not int:
                    raise _Reject
                if not 0 <= quantity <= MAX_UNIT_VALUE:
                    raise _Reject
                append(name_get(name) or name_miss(name))
                append(
                    small[quantity << 1]
                    if quantity < half
                    else big_get(quantity) or big_miss(quantity)
                )
            append(ts_get(ts) or ts_miss(ts))
            append(source_get(source) or source_miss(source))
            if attributes:
                append(counts[len(attributes)])
                for name, value in attributes.items():
                    if type(name) is not str or type(value) is not str:
                        raise _Reject
                    append(name_get(name) or name_miss(name))
                    append(value_get(value) or value_miss(value))
            if reservation is None:
                append(attributes_end_no_reservation)
            elif type(reservation) is str and 0 < len(reservation) <= MAX_ID_CHARS:
                append(null)  # the attributes map's end
                append(some)
                append(encode_string(reservation))
            else:
                raise _Reject
            return b"".join(parts)
        except (_Reject, KeyError):
            pass
        # Outside the handler, so the validator's error is not chained to _Reject.
        return slow_path(event)

    return encode
