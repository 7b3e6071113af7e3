"""Reporter behaviour that needs no broker: config pinning, rejection before send, close."""

from __future__ import annotations

import asyncio

import pytest

from metering.avro import USAGE_EVENT
from metering.sdk import (
    CommandPublisher,
    InvalidCommand,
    InvalidUsageEvent,
    UsageReporter,
    make_usage_event,
    producer_config,
)

NOWHERE = "127.0.0.1:1"  # nothing listens; librdkafka connects lazily


def test_producer_config_pins_idempotence_and_acks() -> None:
    config = producer_config(NOWHERE, {"linger.ms": 5, "acks": "all"})
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["linger.ms"] == 5
    assert config["partitioner"] == "murmur2_random"
    with pytest.raises(ValueError, match=r"enable\.idempotence"):
        producer_config(NOWHERE, {"enable.idempotence": False})
    with pytest.raises(ValueError, match="acks"):
        producer_config(NOWHERE, {"acks": 1})


def test_invalid_event_is_rejected_before_anything_is_queued() -> None:
    with UsageReporter(NOWHERE, topic="t", config={"log_level": 0}) as reporter:
        assert reporter.codec.subject == USAGE_EVENT
        bad = make_usage_event("acct-1", "text_generation", {"input_tokens": -3})
        with pytest.raises(InvalidUsageEvent, match=r"units\['input_tokens'\]"):
            reporter.report(bad)
        assert reporter.sent == 0
        assert reporter.flush(0) == 0


def test_close_raises_when_records_cannot_be_delivered() -> None:
    reporter = UsageReporter(NOWHERE, topic="t", config={"log_level": 0})
    reporter.report(make_usage_event("acct-1", "text_generation", {"input_tokens": 3}))
    assert reporter.sent == 1
    with pytest.raises(Exception, match="undelivered"):
        reporter.close(timeout=0.2)


def test_command_publisher_validates_kind_and_amounts() -> None:
    with CommandPublisher(NOWHERE, topic="c", config={"log_level": 0}) as publisher:
        command = {
            "command_id": "c-1",
            "account_id": "acct-1",
            "kind": "grant",
            "amount": 5_000_000,
            "issued_at": 1_767_225_600_000,
        }
        assert publisher.codec.decode(publisher.encode(command))["amount"] == 5_000_000
        with pytest.raises(InvalidCommand, match="kind"):
            publisher.encode({**command, "kind": "gift"})
        with pytest.raises(InvalidCommand, match="amount"):
            publisher.encode({**command, "amount": 5.0})
        with pytest.raises(InvalidCommand, match="account_id"):
            publisher.encode({**command, "account_id": ""})
        for bad in ("x{y}", "x" * 257):  # the identifier rule: the key layout could not hold it
            with pytest.raises(InvalidCommand, match="account_id"):
                publisher.encode({**command, "account_id": bad})
        assert publisher.sent == 0


def test_report_many_is_all_or_nothing() -> None:
    good = make_usage_event("acct-1", "text_generation", {"input_tokens": 3})
    bad = make_usage_event("acct-2", "text_generation", {"input_tokens": 1.5})  # type: ignore[dict-item]
    with UsageReporter(NOWHERE, topic="t", config={"log_level": 0}) as reporter:
        with pytest.raises(InvalidUsageEvent, match=r"units\['input_tokens'\]") as info:
            reporter.report_many([good, good, bad, good])
        assert info.value.index == 2
        assert info.value.field == "units['input_tokens']"
        assert reporter.sent == 0
        assert reporter.report_many([]) == 0


def test_report_many_counts_what_it_queued() -> None:
    reporter = UsageReporter(NOWHERE, topic="t", config={"log_level": 0})
    events = [make_usage_event(f"acct-{i}", "f", {"requests": 1}) for i in range(2_100)]
    assert reporter.report_many(iter(events)) == 2_100
    assert reporter.sent == 2_100
    with pytest.raises(Exception, match="undelivered"):
        reporter.close(timeout=0.2)


def test_success_reports_off_refuses_per_call_callbacks() -> None:
    event = make_usage_event("acct-1", "text_generation", {"input_tokens": 3})
    with UsageReporter(
        NOWHERE, topic="t", config={"log_level": 0}, success_reports=False
    ) as reporter:
        with pytest.raises(ValueError, match="success_reports=True"):
            reporter.report(event, on_delivery=print)
        with pytest.raises(ValueError, match="success_reports=True"):
            reporter.report_many([event], on_delivery=print)
        with pytest.raises(ValueError, match="success_reports=True"):
            asyncio.run(reporter.report_async(event))
        assert reporter.sent == 0
    with pytest.raises(ValueError, match="success_reports"):
        UsageReporter(NOWHERE, topic="t", config={"delivery.report.only.error": True})
