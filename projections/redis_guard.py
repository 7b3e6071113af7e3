"""Every Redis call of the sidecar under one deadline and one circuit breaker.

Why a guard and not a timeout per call: when Redis hangs, each request would wait its whole
deadline before the fail mode answers, so a hung Redis becomes a slow product. The guard gives
each call a short deadline, counts timeouts and failure replies into a
:class:`~projections.breaker.CircuitBreaker`, answers every call still waiting the moment the
breaker opens, and logs only the breaker's transitions (an outage at thousands of requests a
second must not become thousands of log lines a second).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import (
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)

from projections.breaker import BreakerState, CircuitBreaker
from projections.redis_connect import CONNECTION_FAILURES

log = logging.getLogger("metering.sidecar")

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis timed out, refused the connection, or the breaker is open."""


_OUTAGE_REPLIES = ("READONLY", "OOM", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "LOADING")
"""Error replies that mean Redis cannot serve now (a failover, memory, a long script): the
fail mode answers, as for a timeout, and they count towards the breaker."""


def _unavailable_reply(exc: ResponseError) -> bool:
    return str(exc).startswith(_OUTAGE_REPLIES) or isinstance(
        exc, ReadOnlyError | OutOfMemoryError | BusyLoadingError
    )


class RedisGuard:
    """The deadline, the breaker and the failure count of one process's Redis calls."""

    def __init__(self, deadline_s: float, breaker: CircuitBreaker, fail_mode: str) -> None:
        self.deadline_s = deadline_s
        self.breaker = breaker
        self.fail_mode = fail_mode
        """Named in the outage's log line."""
        self.failures = 0
        self._waiting: set[asyncio.Timeout] = set()
        """Deadlines of the calls in flight: cut short together when the breaker opens."""

    async def call(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call under the breaker and the deadline.

        Raises :class:`RedisUnavailable` at once while the breaker is open, or when the call
        times out or cannot connect. Only breaker transitions are logged: an outage at
        thousands of requests a second must not become thousands of log lines a second."""
        breaker = self.breaker
        if not breaker.allow():
            raise RedisUnavailable("circuit breaker open")
        was = breaker.state
        waiting = self._waiting
        try:
            async with asyncio.timeout(self.deadline_s) as deadline:
                waiting.add(deadline)
                try:
                    result = await call()
                finally:
                    waiting.discard(deadline)
        except ResponseError as exc:
            if not _unavailable_reply(exc):  # Redis answered: a bug of ours, not an outage
                breaker.success()
                log.error("redis refused a call: %s", exc)
                raise RedisUnavailable("redis error reply") from exc
            self._failed(was, exc)
            raise RedisUnavailable(type(exc).__name__) from exc
        except CONNECTION_FAILURES as exc:
            self._failed(was, exc)
            raise RedisUnavailable(type(exc).__name__) from exc
        except BaseException:
            breaker.abandon()
            raise
        if was is not BreakerState.CLOSED:
            log.warning("redis answers again: circuit breaker closed")
        breaker.success()
        return result

    def _failed(self, was: BreakerState, exc: BaseException) -> None:
        """Count a failed call; when it opens the breaker, answer every waiting call now (they
        would time out too) and log the one line of this outage."""
        self.failures += 1
        breaker = self.breaker
        breaker.failure()
        if breaker.state is BreakerState.OPEN and was is BreakerState.CLOSED:
            now = asyncio.get_running_loop().time()
            for other in list(self._waiting):
                if not other.expired():
                    other.reschedule(now)
            log.warning(
                "redis unreachable (%s): answering by fail mode %s for %.1f s, then probing",
                type(exc).__name__,
                self.fail_mode,
                breaker.cooldown_s,
            )
