"""Errors the SDK raises to its callers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metering.sdk.producer import DeliveryReport


class InvalidUsageEvent(ValueError):
    """A usage event failed validation; nothing was sent. ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid usage event: {field}: {reason}")
        self.field = field
        self.reason = reason
        self.index: int | None = None
        """Position of the event in a ``report_many`` batch (None for a single event)."""


class InvalidCommand(ValueError):
    """A credit command failed validation; nothing was sent."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid credit command: {field}: {reason}")
        self.field = field
        self.reason = reason


class DeliveryError(Exception):
    """The broker did not accept a record (after librdkafka's retries) or flush timed out."""

    def __init__(self, message: str, report: DeliveryReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class ProducerFatalError(Exception):
    """The idempotent producer hit a fatal error; it must be recreated, nothing more is sent."""
