"""Calm logs in an outage: repeated lines are rate-limited, and a connection-error storm becomes
one "connection lost" line and one "connection restored" line.

A 23 s Kafka outage once wrote 172,795 lines to the processor's log (aiokafka retries a few
thousand times a second, each retry an ERROR), and nothing said when Kafka came back.
:class:`CalmLogs` is a ``logging.Filter`` put on a service's log handlers:

* a record that says a broker is unreachable (:data:`CONNECTION_ERRORS`) while the service is
  connected turns into ``<component>: Kafka connection lost (<the error>)``; the rest of the
  storm is counted, not written. A probe (the service's own cheap call to the broker) is then
  tried every second, off the logging path, and its first success writes
  ``<component>: Kafka connection restored after 23.1 s (41,388 lines suppressed)``;
* any other line at WARNING or above that repeats (same logger, level and message template)
  is written at most once per window (10 s); the next one written says how many were
  suppressed in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

WINDOW_S = 10.0
"""A repeated line is written at most once per this many seconds."""

CONNECTION_ERRORS = (
    # aiokafka (the processor)
    "Unable connect to node",
    "Unable to update metadata",
    "Unable to request metadata",
    "Failed fetch messages from",
    "NodeNotReadyError",
    "KafkaConnectionError",
    "Connect call failed",
    # librdkafka, through confluent-kafka's ``logger`` (the projection, the sink, the SDK)
    "Connection refused",
    "Connect to ipv4",
    "Connect to ipv6",
    "all brokers are down",
    "brokers are down",
    "Disconnected",
    "BrokerTransportFailure",
)
"""Substrings of the records that mean "the broker cannot be reached"."""

_RESTORED = "%s: Kafka connection restored after %.1f s (%d lines suppressed)"

Probe = Callable[[], bool]
"""Returns True when the broker answers (must not raise, should time out within ~1 s)."""


class CalmLogs(logging.Filter):
    """See the module docstring. One instance per service, shared by its handlers."""

    def __init__(
        self,
        component: str,
        probe: Probe | None = None,
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        probe_interval_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.component = component
        self.probe = probe
        self.window_s = window_s
        self.clock = clock
        self.probe_interval_s = probe_interval_s
        self.log = logging.getLogger(f"metering.{component}")
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        """(logger, level, template) -> (when it was last written, lines suppressed since)"""
        self._lost_at: float | None = None
        self._suppressed_while_lost = 0
        self._prober: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._lost_at is None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg is _RESTORED:
            return True  # our own line
        if _is_connection_error(record):
            return self._connection_error(record)
        if record.levelno < logging.WARNING:
            return True
        return self._rate_limit(record)

    def restored(self) -> None:
        """The broker answers again: write the one "restored" line (the probe calls this; a
        service that sees a success of its own may too)."""
        with self._lock:
            if self._lost_at is None:
                return
            down = self.clock() - self._lost_at
            suppressed = self._suppressed_while_lost
            self._lost_at = None
            self._suppressed_while_lost = 0
        self.log.warning(
            _RESTORED,
            self.component,
            down,
            suppressed,
        )

    def _connection_error(self, record: logging.LogRecord) -> bool:
        with self._lock:
            if self._lost_at is not None:
                self._suppressed_while_lost += 1
                return False
            self._lost_at = self.clock()
        first = _first_line(record)
        record.msg = "%s: Kafka connection lost (%s)"
        record.args = (self.component, first)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._start_probe()
        return True

    def _rate_limit(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.window_s:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # bounded: forget the oldest templates
                for old in list(self._seen)[:5_000]:
                    del self._seen[old]
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{last[1]} similar lines suppressed]"
        return True

    def _start_probe(self) -> None:
        if self.probe is None or (self._prober is not None and self._prober.is_alive()):
            return
        self._prober = threading.Thread(
            target=self._probe_until_restored, name=f"{self.component}-kafka-probe", daemon=True
        )
        self._prober.start()

    def _probe_until_restored(self) -> None:
        assert self.probe is not None
        while not self.connected:
            time.sleep(self.probe_interval_s)
            if self.probe():
                self.restored()
                return


def _is_connection_error(record: logging.LogRecord) -> bool:
    """A broker-unreachable line; a Redis one ("Error 111 connecting to ... Connection
    refused" from the sidecar or the projection) is not, and stays rate-limited as it is."""
    if record.levelno < logging.WARNING and not record.name.startswith("librdkafka"):
        return False
    text = str(record.msg)
    found = any(marker in text for marker in CONNECTION_ERRORS) or (
        bool(record.args) and any(marker in _first_line(record) for marker in CONNECTION_ERRORS)
    )
    return found and "redis" not in f"{text} {_first_line(record)}".lower()


def _first_line(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a record whose args do not fit its template still says something
        text = str(record.msg)
    return text.splitlines()[0][:300] if text else ""


def install(calm: CalmLogs, logger: logging.Logger | None = None) -> None:
    """Put ``calm`` on every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if calm not in handler.filters:
            handler.addFilter(calm)


def kafka_probe(bootstrap: str, timeout_s: float = 1.0) -> Probe:
    """A probe that asks the broker for its metadata (confluent-kafka's AdminClient)."""

    def probe() -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
            admin.list_topics(timeout=timeout_s)
        except Exception:
            return False
        return True

    return probe


def kafka_client_logging(component: str) -> dict[str, object]:
    """confluent-kafka config entries that send librdkafka's log lines (errors and worse)
    through Python logging, and so through :class:`CalmLogs`, instead of raw to stderr."""
    return {"logger": logging.getLogger(f"librdkafka.{component}"), "log_level": 3}


def service_logging(level: str, component: str, bootstrap: str | None) -> CalmLogs:
    """The log setup of a long-running service: plain lines on stderr at ``level``, calmed
    (a probe of ``bootstrap`` finds the broker again after an outage)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(message)s")
    calm = CalmLogs(component, None if bootstrap is None else kafka_probe(bootstrap))
    install(calm)
    return calm
