"""Typed codec errors: each names what is wrong with the bytes, so a DLQ entry explains itself."""

from __future__ import annotations


class CodecError(ValueError):
    """A record could not be encoded or a payload could not be decoded."""


class BadMagicByteError(CodecError):
    """The payload does not start with the Confluent magic byte 0 (not our framing)."""

    def __init__(self, got: int) -> None:
        super().__init__(f"bad magic byte: expected 0x00, got 0x{got:02x}")
        self.got = got


class TruncatedPayloadError(CodecError):
    """The payload ends before the header or the Avro body is complete."""


class UnknownSchemaIdError(CodecError):
    """The writer schema id is not known to the registry."""

    def __init__(self, schema_id: int, where: str = "the schema registry") -> None:
        super().__init__(f"unknown schema id {schema_id} (not in {where})")
        self.schema_id = schema_id


class SchemaMismatchError(CodecError):
    """The writer schema is a different record type than the codec's reader schema."""
