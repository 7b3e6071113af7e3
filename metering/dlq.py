"""Dead-letter records: the original bytes plus headers that say why and where from.

Every dead-letter queue of the pipeline (the processor's input DLQs, the sink's and the
projection's ledger DLQs) is written with :func:`dlq_headers`, so the headers mean the same
everywhere. Headers (all UTF-8): the input's own headers first, as they were, then
``error.class``, ``error.message``, ``source.topic``, ``source.partition``, ``source.offset``.
The value and key are the input's, byte for byte, so a fixed record can be replayed to the
source topic unchanged. One writer per input: the processor for usage events and credit
commands, the projection for the ledger (the ClickHouse sink only counts and skips).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE_BYTES = 1000
"""Header messages are truncated (to whole UTF-8 characters): a DLQ header must never exceed
the broker's record size, however long the error's text."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def truncate_utf8(text: str, max_bytes: int) -> bytes:
    """``text`` as UTF-8, cut to at most ``max_bytes`` without splitting a character."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return raw
    return raw[:max_bytes].decode("utf-8", "ignore").encode("utf-8")


def dlq_headers(
    error_class: str, message: str, source_topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter record: why (class, message) and where from."""
    return [
        ("error.class", truncate_utf8(error_class, MAX_MESSAGE_BYTES)),
        ("error.message", truncate_utf8(message, MAX_MESSAGE_BYTES)),
        ("source.topic", source_topic.encode("utf-8", "replace")),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


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
    original_headers: list[tuple[str, bytes]] | None = None,
) -> DeadLetter:
    """Build the DLQ record for one input that could not be decoded, validated or priced: its
    key, value and headers, then the headers that say why and where from."""
    headers = [
        *(original_headers or ()),
        *dlq_headers(error_class, message, source_topic, partition, offset),
    ]
    return DeadLetter(dlq_topic, key, value, headers)


def header_map(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as a dict of strings (for tests and tooling)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers or []}
