"""Producer SDK: validated, Avro-encoded, idempotent publishing keyed by account.

May import: ``metering`` (domain records, avro codecs, config).
"""

from metering.domain.records import AccountOverride, AutoTopupConfig, CommandKind, CreditCommand
from metering.sdk.commands import CommandPublisher
from metering.sdk.errors import DeliveryError, InvalidCommand, InvalidUsageEvent, ProducerFatalError
from metering.sdk.producer import DeliveryReport, KeyedProducer, producer_config
from metering.sdk.usage import UsageReporter, make_usage_event, new_event_id, now_ms, usage_encoder
from metering.sdk.validation import UsageEventDict, validate_usage_event

__all__ = [
    "AccountOverride",
    "AutoTopupConfig",
    "CommandKind",
    "CommandPublisher",
    "CreditCommand",
    "DeliveryError",
    "DeliveryReport",
    "InvalidCommand",
    "InvalidUsageEvent",
    "KeyedProducer",
    "ProducerFatalError",
    "UsageEventDict",
    "UsageReporter",
    "make_usage_event",
    "new_event_id",
    "now_ms",
    "producer_config",
    "usage_encoder",
    "validate_usage_event",
]
