"""Calm logs (``metering.logs.CalmLogs``): an outage's error storm becomes two lines."""

from __future__ import annotations

import logging
import threading

import pytest

from metering.logs import CalmLogs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> tuple[logging.Logger, list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.Logger("calm-test", logging.DEBUG)  # not in the global registry
    logger.addHandler(Collect())
    return logger, lines


def _calm(logger: logging.Logger, clock: Clock, probe: object = None) -> CalmLogs:
    calm = CalmLogs("processor", probe, clock=clock, probe_interval_s=0.01)  # type: ignore[arg-type]
    for handler in logger.handlers:
        handler.addFilter(calm)
    calm.log = logger  # the lost/restored lines go to the same place
    return calm


def test_a_connection_error_storm_is_one_lost_line_then_one_restored_line(
    captured: tuple[logging.Logger, list[str]],
) -> None:
    logger, lines = captured
    up = threading.Event()
    calm = _calm(logger, Clock(), probe=up.is_set)
    for i in range(5000):
        logger.error("Unable connect to node with id %d: [Errno 111] Connect call failed", i)
    assert lines == [
        "processor: Kafka connection lost (Unable connect to node with id 0: "
        "[Errno 111] Connect call failed)"
    ]
    up.set()
    for _ in range(500):
        if len(lines) == 2:
            break
        threading.Event().wait(0.01)
    assert len(lines) == 2 and "Kafka connection restored after" in lines[1]
    assert "(4999 lines suppressed)" in lines[1]
    assert calm.connected


def test_a_repeated_warning_is_written_once_per_window_with_a_count(
    captured: tuple[logging.Logger, list[str]],
) -> None:
    logger, lines = captured
    clock = Clock()
    _calm(logger, clock)
    for _ in range(100):
        logger.warning("Stream has not started processing %s", "TP(topic='x', partition=0)")
    clock.now += 10.5
    logger.warning("Stream has not started processing %s", "TP(topic='x', partition=1)")
    logger.info("an info line always passes")
    logger.info("an info line always passes")
    assert lines[0] == "Stream has not started processing TP(topic='x', partition=0)"
    assert lines[1].endswith("[99 similar lines suppressed]")
    assert lines[2:] == ["an info line always passes"] * 2


def test_different_warnings_do_not_hide_each_other(
    captured: tuple[logging.Logger, list[str]],
) -> None:
    logger, lines = captured
    _calm(logger, Clock())
    logger.warning("first thing")
    logger.warning("second thing")
    logger.error("first thing")
    assert lines == ["first thing", "second thing", "first thing"]


def test_a_redis_connection_error_is_not_called_a_kafka_outage(
    captured: tuple[logging.Logger, list[str]],
) -> None:
    logger, lines = captured
    calm = _calm(logger, Clock())
    for _ in range(3):
        logger.warning(
            "redis cluster slot map refresh failed (%s); retrying",
            "Error 111 connecting to 127.0.0.1:20014. Connection refused.",
        )
    assert lines == [
        "redis cluster slot map refresh failed (Error 111 connecting to 127.0.0.1:20014. "
        "Connection refused.); retrying"
    ]
    assert calm.connected
