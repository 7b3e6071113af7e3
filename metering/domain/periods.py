"""Billing periods anchored on a day of the month (UTC), in integer epoch milliseconds.

A period runs from one anchor instant (midnight UTC of the anchor day) to the next. An anchor
day past the end of a short month falls on that month's last day (31 -> Feb 28/29).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from metering.domain.errors import ValidationError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
DAY_MS = 86_400_000


def to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def from_datetime(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


def parse_instant(value: object, *, what: str = "instant") -> int:
    """Epoch ms from an int, an ISO-8601 string (``Z`` allowed) or a ``datetime``."""
    if isinstance(value, bool):
        raise ValidationError(f"{what}: {value!r} is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return from_datetime(value)
    if isinstance(value, str):
        try:
            return from_datetime(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError as exc:
            raise ValidationError(f"{what}: {value!r} is not an ISO-8601 time") from exc
    raise ValidationError(f"{what}: {value!r} is not a time")


def _anchor(year: int, month: int, day: int) -> int:
    last = calendar.monthrange(year, month)[1]
    return from_datetime(datetime(year, month, min(day, last), tzinfo=UTC))


def _shift(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def period_bounds(at: int, anchor_day: int) -> tuple[int, int]:
    """The ``[start, end)`` period that contains ``at``."""
    moment = to_datetime(at)
    here = _anchor(moment.year, moment.month, anchor_day)
    if at >= here:
        return here, _anchor(*_shift(moment.year, moment.month, 1), anchor_day)
    return _anchor(*_shift(moment.year, moment.month, -1), anchor_day), here


def next_anchor_after(at: int, anchor_day: int) -> int:
    """The first anchor instant strictly after ``at``: where a period starting at ``at`` ends."""
    return period_bounds(at, anchor_day)[1]
