"""Hand-written Avro codecs for the processor's hot path: LedgerEntry out, UsageEvent in
(CreditCommand in: :mod:`pipeline.fast_command`, which reads with the helpers here).

fastavro's generic ``schemaless_writer``/``schemaless_reader`` cost ~15 us per LedgerEntry
and ~9 us per UsageEvent here (BytesIO, per-field schema dispatch): a third of the worker's
CPU once faust's per-record machinery was gone. These know their record's shape and only join
or slice bytes. Each is byte-for-byte / value-for-value equal to fastavro (hypothesis tests in
``tests/unit/pipeline/test_pipeline_fast_avro.py``) and is only used when the codec's
schema has exactly the shape written out here (:data:`LEDGER_ENTRY_SHAPE`,
``CREDIT_COMMAND_SHAPE`` and ``USAGE_EVENT_SHAPE``); a schema of another shape logs a
warning naming the first differing field, and tests fail when the committed ``.avsc`` drifts
from these shapes. Anything else
(another writer schema id, malformed bytes) goes to the generic :class:`~metering.avro.AvroCodec`,
which also raises the errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from metering.avro import AvroCodec
from metering.avro.fields import Field, enum_type, fits_shape, record_type
from metering.avro.usage_encoder import USAGE_EVENT_SHAPE
from metering.avro.varint import decode_long as _long
from metering.avro.varint import encode_long

_OPT_STRING = ["null", "string"]
_OPT_LONG = ["null", "long"]
LEDGER_ENTRY_SHAPE: tuple[Field, ...] = (
    Field("entry_id", "string"),
    Field("account_id", "string"),
    Field("seq", "long"),
    Field("type", enum_type("io.metering.EntryType")),
    Field("amount", "long"),
    Field(
        "allocations",
        {
            "type": "array",
            "items": record_type(
                "io.metering.Allocation", Field("grant_id", "string"), Field("amount", "long")
            ),
        },
        [],
    ),
    Field("balance_after", "long"),
    Field("overage_after", "long"),
    Field("cause_id", "string"),
    Field("subject", _OPT_STRING, None),
    Field("feature", _OPT_STRING, None),
    Field("model", _OPT_STRING, None),
    Field("price_version", _OPT_STRING, None),
    Field("occurred_at", "long"),
    Field("recorded_at", "long"),
    Field("period_start", "long"),
    Field("period_end", "long"),
    Field("reason", _OPT_STRING, None),
    Field("reservation_id", _OPT_STRING, None),
    Field(
        "grant",
        [
            "null",
            record_type(
                "io.metering.GrantInfo",
                Field("grant_id", "string"),
                Field("source", "string"),
                Field("amount", "long"),
                Field("priority", "int"),
                Field("effective_at", "long"),
                Field("expires_at", _OPT_LONG, None),
                Field("cost_basis_micros", _OPT_LONG, None),
            ),
        ],
        None,
    ),
    Field(
        "terms",
        [
            "null",
            record_type(
                "io.metering.AccountTerms",
                Field("plan_id", "string"),
                Field("overage_policy", "string"),
                Field("overage_limit", "long"),
                Field("features", ["null", {"type": "array", "items": "string"}], None),
                Field("monthly_credits", "long"),
            ),
        ],
        None,
    ),
)
"""The LedgerEntry v1 shape the encoder below is hand-unrolled for (enum symbols are read from
the writer schema). ``test_ledger_entry_shape_is_the_committed_schema`` holds it to the .avsc."""

_NULL = b"\x00"
_SOME = b"\x02"


def _string(s: str) -> bytes:
    b = s.encode()
    return encode_long(len(b)) + b


def _opt_string(s: str | None) -> bytes:
    return _NULL if s is None else _SOME + _string(s)


def _opt_long(n: int | None) -> bytes:
    return _NULL if n is None else _SOME + encode_long(n)


K = TypeVar("K", str, int)


def _bounded_memo(encode: Callable[[K], bytes], cap: int = 50_000) -> Callable[[K], bytes]:
    """``encode`` memoised in a dict that is cleared when it reaches ``cap`` entries."""
    cache: dict[K, bytes] = {}
    get = cache.get

    def memo(value: K) -> bytes:
        enc = get(value)
        if enc is None:
            enc = encode(value)
            if len(cache) >= cap:
                cache.clear()
            cache[value] = enc
        return enc

    return memo


def make_ledger_entry_encoder(codec: AvroCodec) -> Callable[[Mapping[str, Any]], bytes]:
    """``encode(entry) -> framed bytes``: fast for the v1 shape, else ``codec.encode``.

    The shape check runs here, once; a writer schema of another shape gets the generic
    encoder and a warning naming the first differing field.
    """
    if not fits_shape(LEDGER_ENTRY_SHAPE, codec.writer, "LedgerEntry encoder"):
        return codec.encode
    (entry_type,) = (f["type"] for f in codec.writer.schema["fields"] if f["name"] == "type")
    symbols = {s: encode_long(i) for i, s in enumerate(entry_type["symbols"])}
    header = codec.header
    cached = _bounded_memo(_string)
    # Timestamps, period bounds and balances repeat: a varint loop in Python is the cost.
    lng = _bounded_memo(encode_long)

    def opt_cached(s: str | None) -> bytes:
        return _NULL if s is None else _SOME + cached(s)

    def grant_info(g: Mapping[str, Any]) -> bytes:
        return b"".join(
            (
                _SOME,
                _string(g["grant_id"]),
                cached(g["source"]),
                encode_long(g["amount"]),
                encode_long(g["priority"]),
                encode_long(g["effective_at"]),
                _opt_long(g.get("expires_at")),
                _opt_long(g.get("cost_basis_micros")),
            )
        )

    def terms_info(t: Mapping[str, Any]) -> bytes:
        features = t.get("features")
        if features is None:
            feats = _NULL
        elif features:
            feats = b"".join(
                (_SOME, encode_long(len(features)), *(cached(f) for f in features), _NULL)
            )
        else:
            feats = _SOME + _NULL
        return b"".join(
            (
                _SOME,
                cached(t["plan_id"]),
                cached(t["overage_policy"]),
                encode_long(t["overage_limit"]),
                feats,
                encode_long(t["monthly_credits"]),
            )
        )

    def encode(e: Mapping[str, Any]) -> bytes:
        get = e.get
        allocations = get("allocations", ())
        if allocations:
            alloc = b"".join(
                (
                    encode_long(len(allocations)),
                    *(cached(a["grant_id"]) + lng(a["amount"]) for a in allocations),
                    _NULL,
                )
            )
        else:
            alloc = _NULL
        grant = get("grant")
        terms = get("terms")
        return b"".join(
            (
                header,
                _string(e["entry_id"]),
                cached(e["account_id"]),
                lng(e["seq"]),
                symbols[e["type"]],
                lng(e["amount"]),
                alloc,
                lng(e["balance_after"]),
                lng(e["overage_after"]),
                _string(e["cause_id"]),
                opt_cached(get("subject")),
                opt_cached(get("feature")),
                opt_cached(get("model")),
                opt_cached(get("price_version")),
                lng(e["occurred_at"]),
                lng(e["recorded_at"]),
                lng(e["period_start"]),
                lng(e["period_end"]),
                _opt_string(get("reason")),
                _opt_string(get("reservation_id")),
                _NULL if grant is None else grant_info(grant),
                _NULL if terms is None else terms_info(terms),
            )
        )

    return encode


def make_usage_event_decoder(codec: AvroCodec) -> Callable[[bytes], dict[str, Any]]:
    """``decode(framed bytes) -> record``: fast for the codec's own v1 writer id.

    Other schema ids, and any payload the fast path cannot read exactly (truncated, trailing
    bytes, bad UTF-8...), go to ``codec.decode``, which resolves or raises ``CodecError``.
    """
    if not fits_shape(USAGE_EVENT_SHAPE, codec.writer, "UsageEvent decoder"):
        return codec.decode
    str_cache: dict[bytes, str] = {}
    return framed_decoder(codec, partial(_read_usage, cache=str_cache))


Reader = Callable[[bytes], tuple[dict[str, Any], int]]
"""framed bytes -> (record, position after it); raises on anything it cannot read exactly."""


def framed_decoder(codec: AvroCodec, read: Reader) -> Callable[[bytes], dict[str, Any]]:
    """``decode(framed bytes) -> record``: ``read`` for the codec's own writer id, and
    ``codec.decode`` for other ids and for whatever ``read`` cannot read exactly (it raises, or
    bytes trail), so the generic codec resolves or raises its precise ``CodecError``."""
    header = codec.header
    slow = codec.decode

    def decode(data: bytes) -> dict[str, Any]:
        if data[:5] != header:
            return slow(data)
        try:
            record, end = read(data)
        except Exception:  # malformed (or a shape the reader leaves to the generic codec)
            return slow(data)
        if end != len(data):
            return slow(data)
        return record

    return decode


def _read_usage(b: bytes, cache: dict[bytes, str]) -> tuple[dict[str, Any], int]:
    event_id, pos = read_string(b, 5)
    # account_id, subject, feature repeat: cached
    account_id, pos = read_cached_string(b, pos, cache)
    subject, pos = read_cached_string(b, pos, cache)
    feature, pos = read_cached_string(b, pos, cache)
    branch, pos = _long(b, pos)
    if branch == 0:
        model = None
    elif branch == 1:
        model, pos = read_cached_string(b, pos, cache)
    else:
        raise ValueError("bad union branch")
    units, pos = read_long_map(b, pos, cache)
    occurred_at, pos = _long(b, pos)
    source, pos = read_cached_string(b, pos, cache)
    attributes: dict[str, str] = {}
    while True:
        count, pos = _long(b, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _long(b, pos)
        for _ in range(count):
            key, pos = read_cached_string(b, pos, cache)
            attributes[key], pos = read_cached_string(b, pos, cache)
    branch, pos = _long(b, pos)
    if branch == 0:
        reservation = None
    elif branch == 1:
        reservation, pos = read_string(b, pos)
    else:
        raise ValueError("bad union branch")
    return {
        "event_id": event_id,
        "account_id": account_id,
        "subject": subject,
        "feature": feature,
        "model": model,
        "units": units,
        "occurred_at": occurred_at,
        "source": source,
        "attributes": attributes,
        "reservation_id": reservation,
    }, pos


def read_cached_string(b: bytes, pos: int, cache: dict[bytes, str]) -> tuple[str, int]:
    """The Avro string at ``b[pos:]`` and the position after it, for a value that repeats
    (an account, a unit name): decoded once per distinct bytes, up to 100,000 of them."""
    n, pos = _long(b, pos)
    if n < 0:
        raise ValueError("negative length")
    raw = b[pos : pos + n]
    if len(raw) != n:
        raise IndexError("truncated")
    s = cache.get(raw)
    if s is None:
        s = raw.decode()
        if len(cache) < 100_000:
            cache[raw] = s
    return s, pos + n


def read_long_map(b: bytes, pos: int, cache: dict[bytes, str]) -> tuple[dict[str, int], int]:
    """The Avro ``map<long>`` at ``b[pos:]`` (units: keys repeat, cached) and the position
    after it."""
    out: dict[str, int] = {}
    while True:
        count, pos = _long(b, pos)
        if count == 0:
            return out, pos
        if count < 0:  # a block with its byte size
            count = -count
            _, pos = _long(b, pos)
        for _ in range(count):
            key, pos = read_cached_string(b, pos, cache)
            out[key], pos = _long(b, pos)


def read_string(b: bytes, pos: int) -> tuple[str, int]:
    """The Avro string at ``b[pos:]`` and the position after it (a value that is new in every
    record, an id: caching it would only crowd out the ones that repeat)."""
    n, pos = _long(b, pos)
    if n < 0:
        raise ValueError("negative length")
    raw = b[pos : pos + n]
    if len(raw) != n:
        raise IndexError("truncated")
    return raw.decode(), pos + n


LEDGER_ENTRY_HEAD: tuple[Field, ...] = LEDGER_ENTRY_SHAPE[:3]
"""The leading fields :func:`ledger_entry_head` reads."""


def ledger_entry_head(value: bytes) -> tuple[str, str, int]:
    """``(entry_id, account_id, seq)`` of a framed LedgerEntry, without decoding the rest.

    The restore check reads a whole ledger partition for these fields; they are the schema's
    first three (:data:`LEDGER_ENTRY_HEAD`), in every version, which
    ``test_ledger_entry_head_fields_lead_every_ledger_schema`` pins.
    """
    n, pos = _long(value, 5)  # after the magic byte and the 4-byte schema id
    entry_id = value[pos : pos + n].decode()
    n, pos = _long(value, pos + n)
    account_id = value[pos : pos + n].decode()
    seq, _ = _long(value, pos + n)
    return entry_id, account_id, seq
