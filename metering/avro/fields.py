"""Record field lists read from the committed ``schemas/*.avsc``: the one source of field order.

Row builders and column lists derive their fields from here (once, at import). Hand-unrolled hot
paths (the UsageEvent encoder and decoder, the LedgerEntry encoder, the SDK's fast path) keep a
literal *shape* of the record they were written for; :func:`fits_shape` compares it with the
writer schema when a codec is built, and unit tests compare it with the ``.avsc``, so a schema
edit fails a test instead of quietly slowing down (or corrupting) a hot path.

A shape is a tuple of :class:`Field` ``(name, type, default)``, normalised so it is what a
hand-written codec depends on: int logical types stripped (timestamps are plain longs), docs and
aliases dropped, names made full, nested records' fields as :class:`Field` tuples, and enum
symbols left out (every hand-written codec reads those from the writer schema when it is built).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any, Final, NamedTuple

from metering.avro.registry import RegisteredSchema, load_catalog
from metering.avro.schemas import strip_int_logical_types

log = logging.getLogger(__name__)

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_DROPPED = frozenset({"doc", "aliases", "order"})


class _Required:
    """The default slot of a field without a default (``None`` would mean ``"default": null``)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final[Any] = _Required()


class Field(NamedTuple):
    """One record field in normalised form; ``default`` is :data:`REQUIRED` when it has none."""

    name: str
    type: Any
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def record_type(name: str, *fields: Field) -> dict[str, Any]:
    """A nested record type in normalised form, for writing a hot path's shape by hand."""
    return {"type": "record", "name": name, "fields": fields}


def enum_type(name: str) -> dict[str, Any]:
    """An enum type in normalised form (symbols are not part of a shape)."""
    return {"type": "enum", "name": name}


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _fields(schema: Mapping[str, Any], namespace: str | None) -> tuple[Field, ...]:
    return tuple(
        Field(f["name"], _type(f["type"], namespace), f.get("default", REQUIRED))
        for f in schema["fields"]
    )


def _type(t: Any, namespace: str | None) -> Any:
    if isinstance(t, list):
        return [_type(branch, namespace) for branch in t]
    if not isinstance(t, Mapping):
        return t if t in _PRIMITIVES else _full(str(t), namespace)
    kind = t["type"]
    if kind in ("record", "error"):
        name = _full(t["name"], t.get("namespace", namespace))
        return record_type(name, *_fields(t, name.rpartition(".")[0] or None))
    if kind == "enum":
        return enum_type(_full(t["name"], t.get("namespace", namespace)))
    if kind == "fixed":
        return {"type": "fixed", "name": _full(t["name"], namespace), "size": t["size"]}
    if kind == "array":
        return {"type": "array", "items": _type(t["items"], namespace)}
    if kind == "map":
        return {"type": "map", "values": _type(t["values"], namespace)}
    rest = {k: v for k, v in t.items() if k not in _DROPPED}
    return _type(kind, namespace) if set(rest) == {"type"} else rest


def shape(schema: Mapping[str, Any]) -> tuple[Field, ...]:
    """The normalised fields of a record schema (Avro JSON, as in an ``.avsc`` or a registry)."""
    stripped = strip_int_logical_types(schema)
    name = _full(str(stripped["name"]), stripped.get("namespace"))
    return _fields(stripped, name.rpartition(".")[0] or None)


def nested_fields(t: Any) -> tuple[Field, ...] | None:
    """Fields of the record a field type holds (itself, a union branch or array items), if any."""
    if isinstance(t, list):
        for branch in t:
            found = nested_fields(branch)
            if found is not None:
                return found
        return None
    if isinstance(t, Mapping):
        if t.get("type") == "record":
            fields: tuple[Field, ...] = t["fields"]
            return fields
        if t.get("type") == "array":
            return nested_fields(t["items"])
    return None


def _records(fields: Sequence[Field]) -> Iterator[tuple[str, tuple[Field, ...]]]:
    for field in fields:
        for t in field.type if isinstance(field.type, list) else [field.type]:
            while isinstance(t, Mapping) and t.get("type") == "array":
                t = t["items"]
            if isinstance(t, Mapping) and t.get("type") == "record":
                yield t["name"], t["fields"]
                yield from _records(t["fields"])


@cache
def record_fields(name: str, version: int | None = None) -> tuple[Field, ...]:
    """Fields of a committed record: a subject (latest version unless given) or a record type
    nested in one (``io.metering.GrantInfo``, from the subjects' latest versions). Cached; the
    result is shared, so do not mutate its types or defaults.
    """
    catalog = load_catalog()
    if name in catalog.subjects():
        return shape(catalog.get(name, version).schema)
    if version is None:
        for subject in catalog.subjects():
            for nested, fields in _records(record_fields(subject)):
                if nested == name:
                    return fields
    raise KeyError(f"no committed record {name!r}" + (f" version {version}" if version else ""))


def field_names(name: str, version: int | None = None) -> tuple[str, ...]:
    """The field names of a committed record, in schema order (see :func:`record_fields`)."""
    return tuple(f.name for f in record_fields(name, version))


def _outline(t: Any) -> tuple[Any, tuple[Field, ...] | None]:
    """``t`` with its record's fields blanked out, and those fields (to descend into them)."""
    if isinstance(t, list):
        for i, branch in enumerate(t):
            outline, inner = _outline(branch)
            if inner is not None:
                return [*t[:i], outline, *t[i + 1 :]], inner
        return t, None
    if isinstance(t, Mapping) and t.get("type") == "record":
        return {**t, "fields": None}, t["fields"]
    if isinstance(t, Mapping) and t.get("type") == "array":
        outline, inner = _outline(t["items"])
        return {**t, "items": outline}, inner
    return t, None


def first_difference(
    expected: Sequence[Field], actual: Sequence[Field], prefix: str = ""
) -> str | None:
    """The first field where ``actual`` differs from ``expected`` (nested names dotted)."""
    for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want == got:
            continue
        if want.name != got.name:
            return f"field {i} is {prefix + got.name!r}, expected {prefix + want.name!r}"
        (want_outline, want_inner), (got_outline, got_inner) = (
            _outline(want.type),
            _outline(got.type),
        )
        if (
            want_inner is not None
            and got_inner is not None
            and want_outline == got_outline
            and want.default == got.default
        ):
            return first_difference(want_inner, got_inner, f"{prefix}{want.name}.")
        return f"field {prefix + want.name!r} is {got[1:]!r}, expected {want[1:]!r}"
    if len(actual) > len(expected):
        return f"unexpected field {prefix + actual[len(expected)].name!r}"
    if len(expected) > len(actual):
        return f"missing field {prefix + expected[len(actual)].name!r}"
    return None


_warned: set[tuple[str, str, int, str]] = set()


def fits_shape(expected: Sequence[Field], writer: RegisteredSchema, hot_path: str) -> bool:
    """True when ``writer`` has exactly the shape ``hot_path`` was hand-written for.

    Called once when a codec is built, never per record. On a mismatch the caller falls back to
    the generic codec (correct, slower) and this logs one WARNING per hot path and schema naming
    the first differing field: the pin tests fail on the committed schemas, so this only fires
    for a writer schema the code was not updated for.
    """
    difference = first_difference(expected, shape(writer.schema))
    if difference is None:
        return True
    key = (hot_path, writer.subject, writer.schema_id, difference)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "%s (schema id %s) does not have the shape the %s was written for (%s): "
            "using the generic fastavro codec instead; update the hand-written codec",
            writer.subject,
            writer.schema_id,
            hot_path,
            difference,
        )
    return False
