"""Micro-credit arithmetic. 1 credit = 1,000,000 micro-credits, always an ``int``.

Data files state prices in credits ("0.5", 25) for readability; :func:`credits_to_micros`
converts them exactly through ``Decimal`` and refuses anything finer than a micro-credit,
so no float ever reaches a money path.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from metering.domain.errors import ValidationError

MICROS_PER_CREDIT = 1_000_000


def credits_to_micros(value: object, *, what: str = "amount") -> int:
    """Exact credits -> micro-credits; ``value`` is an int, a decimal string or a YAML float."""
    if isinstance(value, bool):
        raise ValidationError(f"{what}: expected a number of credits, got {value!r}")
    if isinstance(value, int):
        return value * MICROS_PER_CREDIT
    if isinstance(value, float | str | Decimal):
        try:
            dec = Decimal(str(value).strip().replace("_", ""))
        except InvalidOperation as exc:
            raise ValidationError(f"{what}: {value!r} is not a number") from exc
        micros = dec * MICROS_PER_CREDIT
        if not micros.is_finite() or micros != micros.to_integral_value():
            raise ValidationError(f"{what}: {value!r} is finer than one micro-credit")
        return int(micros)
    raise ValidationError(f"{what}: expected a number of credits, got {value!r}")


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer division rounding up (for non-negative numerators and positive denominators)."""
    return -(-numerator // denominator)


def format_credits(micros: int, *, thousands: bool = False) -> str:
    """Display form, exact (integer arithmetic), e.g. ``1_500_000 -> "1.5"``; ``thousands``
    groups the whole credits (``"16,403.9229"``)."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_CREDIT)
    text = f"{sign}{whole:,}" if thousands else f"{sign}{whole}"
    return text + (f".{frac:06d}".rstrip("0") if frac else "")
