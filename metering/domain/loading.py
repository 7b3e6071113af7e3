"""Read price books and plans from YAML/JSON files (the only file access of the domain).

Kept apart from the engine so the engine stays pure: these helpers turn a path or a text into
the data structures of :mod:`metering.domain.pricing` and :mod:`metering.domain.plans`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from metering.domain.errors import ValidationError
from metering.domain.plans import PlanCatalog, parse_plans
from metering.domain.pricing import PriceBook, parse_price_book

DEFAULT_PRICE_BOOK = "pricebook.yaml"
DEFAULT_PLANS = "plans.yaml"


def _parse(text: str, what: str) -> dict[str, Any]:
    data = yaml.safe_load(text)  # YAML is a superset of JSON: both formats load here
    if not isinstance(data, dict):
        raise ValidationError(f"{what}: expected a mapping at the top level")
    return data


def _read(path: str | Path | None, default: str) -> tuple[str, str]:
    if path is None:
        return resources.files("metering.data").joinpath(default).read_text("utf-8"), default
    return Path(path).read_text("utf-8"), str(path)


def price_book_from_text(text: str) -> PriceBook:
    return parse_price_book(_parse(text, "price book"))


def plans_from_text(text: str) -> PlanCatalog:
    return parse_plans(_parse(text, "plans"))


def load_price_book(path: str | Path | None = None) -> PriceBook:
    """The price book at ``path``, or the shipped ``metering/data/pricebook.yaml``."""
    text, name = _read(path, DEFAULT_PRICE_BOOK)
    return parse_price_book(_parse(text, name))


def load_plans(path: str | Path | None = None) -> PlanCatalog:
    """The plans at ``path``, or the shipped ``metering/data/plans.yaml``."""
    text, name = _read(path, DEFAULT_PLANS)
    return parse_plans(_parse(text, name))
