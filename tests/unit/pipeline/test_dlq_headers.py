"""One DLQ header writer (metering.dlq) for the processor, the sink and the projection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metering.dlq import MAX_MESSAGE_BYTES, dlq_headers, header_map, truncate_utf8


def test_headers_say_why_and_where_from() -> None:
    headers = header_map(dlq_headers("UnknownFeatureError", "no teleport", "usage-events", 3, 42))
    assert headers == {
        "error.class": "UnknownFeatureError",
        "error.message": "no teleport",
        "source.topic": "usage-events",
        "source.partition": "3",
        "source.offset": "42",
    }


@given(st.text(min_size=0, max_size=3 * MAX_MESSAGE_BYTES))
def test_truncation_never_splits_a_character(text: str) -> None:
    cut = truncate_utf8(text, MAX_MESSAGE_BYTES)
    assert len(cut) <= MAX_MESSAGE_BYTES
    decoded = cut.decode("utf-8")  # strict: a split character would raise
    assert text.encode("utf-8", "replace").decode("utf-8").startswith(decoded)


def test_a_long_multibyte_message_is_cut_on_a_character_boundary() -> None:
    message = dict(dlq_headers("E", "\u20ac" * 1000, "t", 0, 0))["error.message"]
    assert len(message) == 999 and message.decode("utf-8") == "\u20ac" * 333


def test_a_dead_letter_keeps_the_inputs_key_value_and_headers_then_says_why() -> None:
    from metering.dlq import dead_letter

    original = [("traceparent", b"00-abc-01"), ("source.topic", b"upstream")]
    letter = dead_letter(
        "usage-events.dlq",
        key=b"acct-1",
        value=b"\x00bad",
        error_class="CodecError",
        message="bad magic byte",
        source_topic="usage-events",
        partition=2,
        offset=7,
        original_headers=original,
    )
    assert (letter.key, letter.value) == (b"acct-1", b"\x00bad")
    assert letter.headers[:2] == original
    assert header_map(letter.headers[2:])["error.class"] == "CodecError"


def test_the_processor_dead_letters_with_the_inputs_headers() -> None:
    from test_pipeline_core import TOPICS, _processor

    from pipeline.core import InMessage

    proc, _ = _processor()
    bad = InMessage(TOPICS.usage_events, 0, 5, 1, b"a", b"\x00junk", [("trace", b"t-1")])
    out = proc.process([bad], lambda p, a: None)[0]
    (record,) = out.records
    assert record.topic == TOPICS.usage_events_dlq and record.key == b"a"
    assert record.headers is not None and record.headers[0] == ("trace", b"t-1")
