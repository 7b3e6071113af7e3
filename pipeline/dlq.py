"""Dead-letter records: the original bytes plus headers that say why and where from.

Headers (all UTF-8): ``error.class``, ``error.message``, ``source.topic``,
``source.partition``, ``source.offset``. The value and key are the input's, byte for byte,
so a fixed record can be replayed to the source topic unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE = 1000
"""Header messages are truncated: a DLQ header must never exceed the broker's record size."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(
    dlq_topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    error_class: str,
    message: str,
    source_topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """Build the DLQ record for one input that could not be decoded, validated or priced."""
    headers = [
        ("error.class", error_class.encode()),
        ("error.message", message[:MAX_MESSAGE].encode("utf-8", "replace")),
        ("source.topic", source_topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]
    return DeadLetter(dlq_topic, key, value, headers)


def header_map(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as a dict of strings (for tests and tooling)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers or []}
