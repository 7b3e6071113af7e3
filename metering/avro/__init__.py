"""Avro contracts on the wire: schemas, the registry of ids and the Confluent-framed codec.

May import: ``metering``, ``schemas``.
"""

from metering.avro.codec import HEADER_SIZE, MAGIC, AvroCodec, frame_header, read_header
from metering.avro.errors import (
    BadMagicByteError,
    CodecError,
    SchemaMismatchError,
    TruncatedPayloadError,
    UnknownSchemaIdError,
)
from metering.avro.registry import (
    ConfluentSchemaRegistry,
    FileSchemaRegistry,
    RegisteredSchema,
    SchemaCatalog,
    SchemaRegistry,
    load_catalog,
    load_registry,
)
from metering.avro.schemas import (
    CREDIT_ALERT,
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    SUBJECTS,
    USAGE_EVENT,
)

__all__ = [
    "CREDIT_ALERT",
    "CREDIT_COMMAND",
    "HEADER_SIZE",
    "LEDGER_ENTRY",
    "MAGIC",
    "SUBJECTS",
    "USAGE_EVENT",
    "AvroCodec",
    "BadMagicByteError",
    "CodecError",
    "ConfluentSchemaRegistry",
    "FileSchemaRegistry",
    "RegisteredSchema",
    "SchemaCatalog",
    "SchemaMismatchError",
    "SchemaRegistry",
    "TruncatedPayloadError",
    "UnknownSchemaIdError",
    "frame_header",
    "load_catalog",
    "load_registry",
    "read_header",
]
