"""``CommandPublisher``: billing/admin put CreditCommands on ``credit-commands``.

Low volume, so it uses the generic fastavro path of the codec; it shares the producer core
(idempotent, keyed by account, back-pressure, delivery reports) with ``UsageReporter``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metering.avro import CREDIT_COMMAND, AvroCodec, CodecError, SchemaRegistry
from metering.config import Settings
from metering.domain.identifiers import identifier_problem
from metering.domain.records import CommandKind, CreditCommand
from metering.sdk.errors import InvalidCommand
from metering.sdk.producer import DeliveryCallback, DeliveryReport, KeyedProducer
from metering.sdk.usage import _PublisherBase, _resolve, now_ms
from metering.topics import configured_topics

MAX_ID_CHARS = 128
_AMOUNT_FIELDS = ("amount", "cost_basis_micros")


def _account(command: CreditCommand | Mapping[str, Any]) -> str:
    account: str = (
        command.account_id if isinstance(command, CreditCommand) else command["account_id"]
    )
    return account


def _enum_symbols(codec: AvroCodec, field: str) -> frozenset[str]:
    for f in codec.writer.schema["fields"]:
        if f["name"] == field:
            return frozenset(f["type"]["symbols"])
    raise KeyError(field)


class CommandPublisher(_PublisherBase):
    """Validate, encode and send CreditCommands keyed by ``account_id``."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topic: str | None = None,
        settings: Settings | None = None,
        registry: SchemaRegistry | None = None,
        config: Mapping[str, Any] | None = None,
        on_error: DeliveryCallback | None = None,
    ) -> None:
        bootstrap, registry = _resolve(bootstrap, settings, registry)
        self.codec = AvroCodec(registry, CREDIT_COMMAND)
        self._kinds = _enum_symbols(self.codec, "kind")
        self._core = KeyedProducer(
            bootstrap,
            topic or configured_topics().credit_commands,
            config=config,
            on_error=on_error,
        )

    def encode(self, command: CreditCommand | Mapping[str, Any]) -> bytes:
        """Validate and encode (framed); raises :class:`InvalidCommand`.

        ``command`` is a :class:`~metering.domain.records.CreditCommand` (its field list is the
        schema's), or the record as a dict with every field present."""
        if isinstance(command, CreditCommand):
            command = command.to_record()
        command_id = command.get("command_id")
        if not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_ID_CHARS:
            raise InvalidCommand("command_id", f"must be a non-empty string of <= {MAX_ID_CHARS}")
        problem = identifier_problem(command.get("account_id"))
        if problem is not None:
            raise InvalidCommand("account_id", problem)
        if command.get("kind") not in self._kinds:
            raise InvalidCommand("kind", f"must be one of {sorted(self._kinds)}")
        issued_at = command.get("issued_at")
        if type(issued_at) is not int or issued_at <= 0:
            raise InvalidCommand("issued_at", "must be positive int epoch milliseconds")
        for field in _AMOUNT_FIELDS:
            amount = command.get(field)
            if amount is not None and type(amount) is not int:
                raise InvalidCommand(field, "must be an int of micro-credits (no floats)")
        try:
            return self.codec.encode(command)
        except CodecError as exc:
            raise InvalidCommand("command", str(exc)) from exc

    def publish(
        self,
        command: CreditCommand | Mapping[str, Any],
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Send one command (blocks only while the local queue is full)."""
        value = self.encode(command)
        self._core.send(_account(command).encode(), value, on_delivery)

    def void_usage(
        self,
        account_id: str,
        event_id: str,
        *,
        command_id: str,
        reason: str | None = None,
        issued_at: int | None = None,
    ) -> None:
        """Give the charge of usage event ``event_id`` back (docs/corrections.md for the
        rules). ``command_id`` makes it idempotent: a refund's id, say; re-send with the same."""
        self.publish(
            CreditCommand(
                command_id,
                account_id,
                CommandKind.VOID_USAGE,
                now_ms() if issued_at is None else issued_at,
                reason=reason,
                event_id=event_id,
            )
        )

    def amend_usage(
        self,
        account_id: str,
        event_id: str,
        units: Mapping[str, int],
        *,
        command_id: str,
        reason: str | None = None,
        issued_at: int | None = None,
    ) -> None:
        """Charge usage event ``event_id`` again for its corrected ``units`` (all of them),
        priced as of the event's own time; the old charge is given back first. All or
        nothing: refused (``insufficient_balance``) when the account cannot pay the new charge.
        docs/corrections.md has the rules."""
        self.publish(
            CreditCommand(
                command_id,
                account_id,
                CommandKind.AMEND_USAGE,
                now_ms() if issued_at is None else issued_at,
                reason=reason,
                event_id=event_id,
                units=dict(units),
            )
        )

    async def publish_async(self, command: CreditCommand | Mapping[str, Any]) -> DeliveryReport:
        """Send one command and await the broker's acknowledgement."""
        value = self.encode(command)
        return await self._core.send_async(_account(command).encode(), value)

    def __enter__(self) -> CommandPublisher:
        return self
