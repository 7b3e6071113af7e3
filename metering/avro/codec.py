"""Confluent-framed Avro: ``0x00 | schema id (4 bytes, big-endian) | Avro binary body``.

A codec is bound to one subject. It writes with the local schema (latest version unless
pinned) and reads any registered version of that subject, resolving the writer's schema
to its own reader schema the Avro way, so producers and consumers can upgrade separately.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from metering.avro.errors import (
    BadMagicByteError,
    CodecError,
    SchemaMismatchError,
    TruncatedPayloadError,
)
from metering.avro.fields import fits_shape
from metering.avro.registry import RegisteredSchema, SchemaRegistry
from metering.avro.schemas import USAGE_EVENT, full_name
from metering.avro.usage_encoder import USAGE_EVENT_SHAPE, make_usage_event_encoder

MAGIC = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">bI")
ENCODE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, OverflowError)


def frame_header(schema_id: int) -> bytes:
    """The 5-byte Confluent header for ``schema_id``."""
    return _HEADER.pack(MAGIC, schema_id)


def read_header(data: bytes) -> int:
    """Check the framing and return the writer schema id."""
    if len(data) < 1:
        raise TruncatedPayloadError("truncated payload: empty, expected a 5-byte header")
    if data[0] != MAGIC:
        raise BadMagicByteError(data[0])
    if len(data) < HEADER_SIZE:
        raise TruncatedPayloadError(
            f"truncated payload: {len(data)} bytes, shorter than the 5-byte header"
        )
    schema_id: int = _HEADER.unpack_from(data)[1]
    return schema_id


class AvroCodec:
    """Encode and decode one subject's records (plain dicts; timestamps as int millis)."""

    def __init__(
        self, registry: SchemaRegistry, subject: str, *, version: int | None = None
    ) -> None:
        self.registry = registry
        self.subject = subject
        self.writer: RegisteredSchema = registry.writer_schema(subject, version)
        self.schema_id = self.writer.schema_id
        self.header = frame_header(self.schema_id)
        self._reader_name = full_name(self.writer.schema)
        self._resolved: dict[int, RegisteredSchema] = {self.schema_id: self.writer}
        self._encode_body: Callable[[Mapping[str, Any]], bytes] = self._generic_encoder()
        self.fast_encoder = subject == USAGE_EVENT and fits_shape(
            USAGE_EVENT_SHAPE, self.writer, "UsageEvent encoder"
        )
        """Whether encoding uses the hand-unrolled encoder (else fastavro, after a warning)."""
        if self.fast_encoder:
            self._encode_body = make_usage_event_encoder(self.header)

    def _generic_encoder(self) -> Callable[[Mapping[str, Any]], bytes]:
        parsed, header = self.writer.parsed, self.header

        def encode(record: Mapping[str, Any]) -> bytes:
            buf = io.BytesIO()
            buf.write(header)
            schemaless_writer(buf, parsed, record)
            return buf.getvalue()

        return encode

    @property
    def encode_unchecked(self) -> Callable[[Mapping[str, Any]], bytes]:
        """The bare encoder for hot paths that validated the record already.

        It raises ``KeyError``/``TypeError``/``AttributeError``/``OverflowError`` instead of
        :class:`CodecError` for records that do not fit the schema.
        """
        return self._encode_body

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Frame and encode ``record``; raise :class:`CodecError` if it does not fit the schema."""
        try:
            return self._encode_body(record)
        except ENCODE_ERRORS as exc:
            raise CodecError(f"cannot encode {self.subject} record: {exc!r}") from exc

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode by the writer schema id, resolved to this codec's reader schema."""
        schema_id = read_header(data)
        writer = self._resolved.get(schema_id)
        if writer is None:
            writer = self._writer_for(schema_id)
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        reader = None if writer is self.writer else self.writer.parsed
        try:
            record = schemaless_reader(buf, writer.parsed, reader)
        except (EOFError, StopIteration, IndexError, struct.error) as exc:
            raise TruncatedPayloadError(
                f"truncated payload: {len(data)} bytes end inside the Avro body of "
                f"{self.subject} (schema id {schema_id})"
            ) from exc
        except Exception as exc:
            raise CodecError(
                f"cannot decode {self.subject} (schema id {schema_id}): {exc!r}"
            ) from exc
        if buf.tell() != len(data):
            raise CodecError(
                f"{len(data) - buf.tell()} trailing bytes after the {self.subject} record "
                f"(schema id {schema_id})"
            )
        if not isinstance(record, dict):
            raise CodecError(f"schema id {schema_id} did not decode to a record")
        return record

    def _writer_for(self, schema_id: int) -> RegisteredSchema:
        writer = self.registry.by_id(schema_id)
        name = full_name(writer.schema)
        if name != self._reader_name:
            raise SchemaMismatchError(
                f"schema id {schema_id} is {name}, but this codec reads {self._reader_name}"
            )
        self._resolved[schema_id] = writer
        return writer
