"""Topic names of the pipeline. Creation (``metering topics create``) lives here too.

Every keyed topic is keyed by ``account_id`` and has the same partition count, so one
account's usage and commands reach the same processor task in order. ``TopicNames``
takes a prefix so tests and benchmarks can run side by side on one broker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The pipeline's topics, optionally namespaced by a prefix (e.g. ``"t123."``)."""

    prefix: str = ""

    @property
    def usage_events(self) -> str:
        return f"{self.prefix}usage-events"

    @property
    def credit_commands(self) -> str:
        return f"{self.prefix}credit-commands"

    @property
    def credit_ledger(self) -> str:
        return f"{self.prefix}credit-ledger"

    @property
    def credit_alerts(self) -> str:
        return f"{self.prefix}credit-alerts"

    @property
    def usage_events_dlq(self) -> str:
        return f"{self.prefix}usage-events.dlq"

    @property
    def credit_commands_dlq(self) -> str:
        return f"{self.prefix}credit-commands.dlq"

    @property
    def credit_ledger_dlq(self) -> str:
        """Ledger records the sink or projection could not decode (should stay empty)."""
        return f"{self.prefix}credit-ledger.dlq"

    def keyed(self) -> list[str]:
        """Topics keyed by account_id: all get the same partition count."""
        return [self.usage_events, self.credit_commands, self.credit_ledger, self.credit_alerts]

    def dead_letter(self) -> list[str]:
        return [self.usage_events_dlq, self.credit_commands_dlq, self.credit_ledger_dlq]

    def all(self) -> list[str]:
        return self.keyed() + self.dead_letter()


DEFAULT_TOPICS = TopicNames()
