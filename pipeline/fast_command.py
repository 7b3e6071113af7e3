"""A hand-written Avro decoder for CreditCommand, the processor's second input.

fastavro's generic reader costs ~15 us per command here (~6 us this way). Commands were rare
(plans, purchases) until corrections: ``void_usage`` and ``amend_usage`` arrive at a share of
the usage rate, so they are on the hot path too. The same rules as :mod:`pipeline.fast_avro`:
used only for a writer schema of exactly :data:`CREDIT_COMMAND_SHAPE`, equal to fastavro value
for value (hypothesis tests in ``tests/unit/pipeline/test_pipeline_fast_avro.py``), and
anything else goes to the generic codec.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from metering.avro import AvroCodec
from metering.avro.fields import Field, enum_type, fits_shape, record_type
from metering.avro.varint import decode_long as _long
from pipeline.fast_avro import framed_decoder, read_cached_string, read_long_map, read_string

_OPT_STRING = ["null", "string"]
_OPT_LONG = ["null", "long"]

CREDIT_COMMAND_SHAPE: tuple[Field, ...] = (
    Field("command_id", "string"),
    Field("account_id", "string"),
    Field("kind", enum_type("io.metering.CommandKind")),
    Field("amount", _OPT_LONG, None),
    Field("grant_id", _OPT_STRING, None),
    Field("grant_source", _OPT_STRING, None),
    Field("priority", ["null", "int"], None),
    Field("effective_at", _OPT_LONG, None),
    Field("expires_at", _OPT_LONG, None),
    Field("plan_id", _OPT_STRING, None),
    Field("reason", _OPT_STRING, None),
    Field("cost_basis_micros", _OPT_LONG, None),
    Field("currency", _OPT_STRING, None),
    Field(
        "override",
        [
            "null",
            record_type(
                "io.metering.AccountOverride",
                Field("monthly_credits", _OPT_LONG, None),
                Field("overage_policy", _OPT_STRING, None),
                Field("overage_limit", _OPT_LONG, None),
                Field("trial_features", {"type": "array", "items": "string"}, []),
                Field("trial_until", _OPT_LONG, None),
            ),
        ],
        None,
    ),
    Field(
        "auto_topup",
        [
            "null",
            record_type(
                "io.metering.AutoTopupConfig",
                Field("enabled", "boolean"),
                Field("threshold", "long"),
                Field("amount", "long"),
                Field("max_requests", "int", 3),
                Field("window_ms", "long", 86400000),
            ),
        ],
        None,
    ),
    Field("event_id", _OPT_STRING, None),
    Field("units", ["null", {"type": "map", "values": "long"}], None),
    Field("issued_at", "long"),
)
"""The CreditCommand v3 shape the decoder below reads. Its two nested records (``override``,
``auto_topup``) are rare (one command per account and change): a command that carries either
goes to the generic codec, so the unrolled path stays short. Held to the .avsc by
``test_credit_command_shape_is_the_committed_schema``."""

# How _read_command reads the optional fields between ``kind`` and ``issued_at``, in order.
# _READ_ID: a string that is new in every record (not cached); _READ_STR: one that repeats.
_READ_LONG, _READ_INT, _READ_STR, _READ_ID, _READ_UNITS, _READ_RECORD = range(6)
_COMMAND_OPTIONALS: tuple[tuple[str, int], ...] = (
    ("amount", _READ_LONG),
    ("grant_id", _READ_ID),
    ("grant_source", _READ_STR),
    ("priority", _READ_INT),
    ("effective_at", _READ_LONG),
    ("expires_at", _READ_LONG),
    ("plan_id", _READ_STR),
    ("reason", _READ_STR),
    ("cost_basis_micros", _READ_LONG),
    ("currency", _READ_STR),
    ("override", _READ_RECORD),
    ("auto_topup", _READ_RECORD),
    ("event_id", _READ_ID),
    ("units", _READ_UNITS),
)
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


class _Nested(Exception):
    """A command with a nested record: the generic codec reads it."""


def make_credit_command_decoder(codec: AvroCodec) -> Callable[[bytes], dict[str, Any]]:
    """``decode(framed bytes) -> record``: fast for the codec's own v3 writer id.

    fastavro's generic reader costs ~15 us per command here; corrections arrive at a share of
    the usage rate, so commands are on the hot path too. Commands with an ``override`` or
    ``auto_topup``, other schema ids and anything the fast path cannot read exactly go to
    ``codec.decode``, which resolves or raises ``CodecError``.
    """
    if not fits_shape(CREDIT_COMMAND_SHAPE, codec.writer, "CreditCommand decoder"):
        return codec.decode
    (kind,) = (f["type"] for f in codec.writer.schema["fields"] if f["name"] == "kind")
    symbols: tuple[str, ...] = tuple(kind["symbols"])
    str_cache: dict[bytes, str] = {}
    # Nested records raise in _read_command: the generic codec reads those (framed_decoder).
    return framed_decoder(codec, partial(_read_command, symbols=symbols, cache=str_cache))


def _read_command(
    b: bytes, symbols: tuple[str, ...], cache: dict[bytes, str]
) -> tuple[dict[str, Any], int]:
    command_id, pos = read_string(b, 5)
    account_id, pos = read_cached_string(b, pos, cache)
    index, pos = _long(b, pos)
    if index < 0:
        raise IndexError("bad enum index")
    record: dict[str, Any] = {
        "command_id": command_id,
        "account_id": account_id,
        "kind": symbols[index],
    }
    value: Any
    for name, how in _COMMAND_OPTIONALS:
        branch = b[pos]  # a union's branch: one byte, 0 (null) or 2 (the value)
        pos += 1
        if branch == 0:
            record[name] = None
            continue
        if branch != 2:
            raise ValueError("bad union branch")  # or a long varint: fastavro decides
        if how == _READ_LONG:
            value, pos = _long(b, pos)
        elif how == _READ_STR:
            value, pos = read_cached_string(b, pos, cache)
        elif how == _READ_ID:
            value, pos = read_string(b, pos)
        elif how == _READ_INT:
            value, pos = _long(b, pos)
            if not _INT_MIN <= value <= _INT_MAX:
                raise ValueError("int out of range")
        elif how == _READ_UNITS:
            value, pos = read_long_map(b, pos, cache)
        else:
            raise _Nested(name)
        record[name] = value
    record["issued_at"], pos = _long(b, pos)
    return record, pos
