"""A circuit breaker for the sidecar's Redis calls (pure: the clock is injected).

Why: when Redis hangs, every request would wait for its deadline before the fail mode answers,
so a hung Redis becomes a slow product. After ``failures`` timeouts or errors within
``window_s``, the breaker *opens*: requests get the fail-mode answer at once, without touching
Redis, for ``cooldown_s``. Then it is *half open*: one request at a time probes Redis; a success
closes the breaker, a failure opens it for another cool-down.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum


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
        cooldown_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or window_s <= 0 or cooldown_s <= 0:
            raise ValueError("breaker needs failures >= 1, window_s > 0 and cooldown_s > 0")
        self.failures = failures
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._recent: deque[float] = deque(maxlen=failures)
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
            self._recent.clear()

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
        self._recent.append(now)
        if len(self._recent) == self.failures and now - self._recent[0] <= self.window_s:
            self._opened_at = now
            self.opened_total += 1
            self._recent.clear()
