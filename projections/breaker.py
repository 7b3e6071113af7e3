"""A circuit breaker for the sidecar's Redis calls (pure: the clock is injected).

Why: when Redis hangs, every request would wait for its deadline before the fail mode answers,
so a hung Redis becomes a slow product. After ``failures`` timeouts or errors within
``window_s`` that span at least ``min_span_s``, the breaker *opens*: requests get the fail-mode
answer at once, without touching Redis, for ``cooldown_s``. Then it is *half open*: one request
at a time probes Redis; a success closes the breaker, a failure opens it for another cool-down.

Why the span: a hung Redis keeps failing call after call, while one stall of this process (or
of the machine) makes every call in flight miss its deadline at the same instant (their timers
all fire within a few milliseconds once the loop runs again) and the next ones succeed. Opening
on such a burst turned one 150 ms hiccup into ``cooldown_s`` of fail-mode answers against a
healthy Redis. A span of 20 ms tells the two apart and costs a real hang ~20 ms more before
the breaker opens.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum

_BUCKET_S = 0.005
"""Failures are counted in 5 ms buckets: the window's memory is bounded by its length, not by
the request rate."""


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int = 3,
        window_s: float = 1.0,
        min_span_s: float = 0.02,
        cooldown_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or window_s <= 0 or cooldown_s <= 0:
            raise ValueError("breaker needs failures >= 1, window_s > 0 and cooldown_s > 0")
        if not 0 <= min_span_s < window_s or (failures == 1 and min_span_s > 0):
            raise ValueError("breaker needs 0 <= min_span_s < window_s (0 for failures == 1)")
        self.failures = failures
        self.window_s = window_s
        self.min_span_s = min_span_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._recent: deque[tuple[float, int]] = deque()
        """(bucket start, failures in it) within the window, oldest first."""
        self._in_window = 0
        self._opened_at: float | None = None
        self._probing = False
        self.opened_total = 0
        """How many times the breaker opened (a Prometheus counter)."""

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self) -> bool:
        """May this request call Redis? False means: answer by the fail mode now."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self.cooldown_s:
            return False
        self._probing = True  # this caller is the half-open probe
        return True

    def success(self) -> None:
        """A Redis call answered."""
        if self._opened_at is not None and self._probing:
            self._opened_at = None
            self._probing = False
            self._forget()

    def abandon(self) -> None:
        """The caller allowed through never reached Redis (bad input, or it was cancelled): let
        another request be the probe."""
        self._probing = False

    def failure(self) -> None:
        """A Redis call timed out or failed to connect."""
        now = self._clock()
        if self._opened_at is not None:
            if self._probing:  # the probe failed: another cool-down
                self._opened_at = now
                self._probing = False
            return
        recent = self._recent
        if recent and now - recent[-1][0] < _BUCKET_S:
            start, count = recent[-1]
            recent[-1] = (start, count + 1)
        else:
            recent.append((now, 1))
        self._in_window += 1
        while now - recent[0][0] > self.window_s:
            self._in_window -= recent.popleft()[1]
        if self._in_window >= self.failures and now - recent[0][0] >= self.min_span_s:
            self._opened_at = now
            self.opened_total += 1
            self._forget()

    def _forget(self) -> None:
        self._recent.clear()
        self._in_window = 0
