"""Which historical events a backfill may still send: the rule, without I/O.

The processor charges an event only while its id is inside the idempotency window (35 days of
account time by default): an older one could be a copy of an event whose id is already
forgotten, so it is recorded as ``outside_dedupe_window`` and never charged. A backfill refuses
those up front instead of sending them to be refused. It keeps a margin (a day by default), so
that an event cannot age out between the check and its processing. Events from the future
(beyond a small clock skew) are refused too: they would move the account's clock ahead.
"""

from __future__ import annotations

from typing import NamedTuple

DAY_MS = 86_400_000
MAX_SKEW_MS = 5 * 60_000


class Window(NamedTuple):
    """Event times a backfill sends: ``[oldest, newest]`` in epoch ms."""

    oldest: int
    newest: int

    @classmethod
    def ending(cls, now: int, window_ms: int, margin_ms: int = DAY_MS) -> Window:
        return cls(now - window_ms + margin_ms, now + MAX_SKEW_MS)

    def problem(self, occurred_at: int) -> str | None:
        """Why an event at ``occurred_at`` is refused (None: it is sent)."""
        if occurred_at < self.oldest:
            return "outside_window: older than the idempotency window"
        if occurred_at > self.newest:
            return "outside_window: in the future"
        return None
