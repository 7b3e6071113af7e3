"""The price book: versioned rates as data, turned into an integer price per usage event.

A version holds ``features -> model key -> unit -> rate``. The model key is looked up as the
event's exact model, then the model's tier (``model_tiers``), then the ``"*"`` wildcard. A rate
is micro-credits per block of ``per`` units (e.g. 500 micro-credits per 1,000 tokens).

Rounding happens **once per event**: every rate of a version is scaled to a common denominator
(the lcm of its block sizes), the event's units are summed exactly in that scale, and only the
total is rounded up to the micro-credit.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metering.domain.errors import (
    NegativeQuantityError,
    UnknownFeatureError,
    UnknownModelError,
    UnknownUnitError,
    ValidationError,
)
from metering.domain.money import credits_to_micros
from metering.domain.periods import parse_instant

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class UnitRate:
    """``micros`` micro-credits per ``per`` units."""

    micros: int
    per: int = 1


@dataclass(slots=True)
class PriceVersion:
    """One immutable version of the price book, effective from ``effective_from`` (epoch ms)."""

    version: str
    effective_from: int
    features: Mapping[str, Mapping[str, Mapping[str, UnitRate]]]
    model_tiers: Mapping[str, str] = field(default_factory=dict)
    denominator: int = 1
    # (feature, model) -> {unit: rate scaled to ``denominator``}; filled lazily.
    _scaled: dict[tuple[str, str | None], dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        blocks = [
            r.per for models in self.features.values() for u in models.values() for r in u.values()
        ]
        self.denominator = math.lcm(*blocks) if blocks else 1

    def scaled_rates(self, feature: str, model: str | None) -> dict[str, int]:
        """The unit rates that apply to (feature, model), scaled to :attr:`denominator`."""
        found = self._scaled.get((feature, model))
        if found is not None:
            return found
        models = self.features.get(feature)
        if models is None:
            raise UnknownFeatureError(f"feature {feature!r} is not in price book {self.version}")
        rates = None
        if model is not None:
            rates = models.get(model)
            if rates is None:
                tier = self.model_tiers.get(model)
                rates = models.get(tier) if tier is not None else None
        if rates is None:
            rates = models.get(WILDCARD)
        if rates is None:
            raise UnknownModelError(
                f"no rate for feature {feature!r} and model {model!r} in price book {self.version}"
            )
        scaled = {unit: r.micros * (self.denominator // r.per) for unit, r in rates.items()}
        self._scaled[(feature, model)] = scaled
        return scaled

    def price(self, feature: str, model: str | None, units: Mapping[str, int]) -> int:
        """Micro-credits for one event, rounded up once. Raises a ``PricingError``."""
        rates = self._scaled.get((feature, model)) or self.scaled_rates(feature, model)
        total = 0
        for unit, quantity in units.items():
            rate = rates.get(unit)
            if rate is None:
                raise UnknownUnitError(f"unit {unit!r} has no rate for feature {feature!r}")
            if quantity < 0:
                raise NegativeQuantityError(f"unit {unit!r} has negative quantity {quantity}")
            total += quantity * rate
        return -(-total // self.denominator)


class PriceBook:
    """All versions, ordered by ``effective_from``. An event is priced by its ``occurred_at``.

    Events older than the first version use the first version, so a price book published
    after the fact can still price the backlog.
    """

    __slots__ = ("_latest", "_latest_from", "_starts", "versions")

    def __init__(self, versions: list[PriceVersion]) -> None:
        if not versions:
            raise ValidationError("a price book needs at least one version")
        self.versions = sorted(versions, key=lambda v: v.effective_from)
        names = [v.version for v in self.versions]
        if len(set(names)) != len(names):
            raise ValidationError(f"duplicate price book versions: {names}")
        self._starts = [v.effective_from for v in self.versions]
        self._latest = self.versions[-1]
        self._latest_from = self._latest.effective_from

    def version_at(self, at: int) -> PriceVersion:
        if at >= self._latest_from:
            return self._latest
        index = bisect.bisect_right(self._starts, at) - 1
        return self.versions[max(index, 0)]

    def price(
        self, feature: str, model: str | None, units: Mapping[str, int], at: int
    ) -> tuple[int, str]:
        """(micro-credits, price version) for one event occurring at ``at``."""
        version = self._latest if at >= self._latest_from else self.version_at(at)
        return version.price(feature, model, units), version.version


# -- parsing (pure: takes already-loaded data) --------------------------------------------------


def _parse_rate(raw: Any, where: str) -> UnitRate:
    if isinstance(raw, Mapping):
        per = raw.get("per", 1)
        if not isinstance(per, int) or isinstance(per, bool) or per < 1:
            raise ValidationError(f"{where}: 'per' must be a positive integer, got {per!r}")
        if "micros" in raw:
            micros = raw["micros"]
            if not isinstance(micros, int) or isinstance(micros, bool):
                raise ValidationError(f"{where}: 'micros' must be an integer")
        else:
            micros = credits_to_micros(raw.get("credits"), what=where)
        rate = UnitRate(micros=micros, per=per)
    else:
        rate = UnitRate(micros=credits_to_micros(raw, what=where))
    if rate.micros < 0:
        raise ValidationError(f"{where}: a rate cannot be negative")
    return rate


def parse_price_book(data: Mapping[str, Any]) -> PriceBook:
    """Build a :class:`PriceBook` from parsed YAML/JSON (see ``metering/data/pricebook.yaml``)."""
    raw_versions = data.get("versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise ValidationError("price book: 'versions' must be a non-empty list")
    versions = []
    for raw in raw_versions:
        name = str(raw.get("version", ""))
        if not name:
            raise ValidationError("price book: every version needs a 'version' name")
        features: dict[str, dict[str, dict[str, UnitRate]]] = {}
        for feature, models in (raw.get("features") or {}).items():
            if not isinstance(models, Mapping) or not models:
                raise ValidationError(f"{name}/{feature}: expected a map of model keys to rates")
            features[feature] = {
                str(model): {
                    str(unit): _parse_rate(rate, f"{name}/{feature}/{model}/{unit}")
                    for unit, rate in units.items()
                }
                for model, units in models.items()
            }
        versions.append(
            PriceVersion(
                version=name,
                effective_from=parse_instant(raw.get("effective_from", 0), what=f"{name}"),
                features=features,
                model_tiers={str(k): str(v) for k, v in (raw.get("model_tiers") or {}).items()},
            )
        )
    return PriceBook(versions)
