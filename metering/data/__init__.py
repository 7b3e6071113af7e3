"""Shipped default data (price book, plans). A package so the YAML ships in the wheel.
Imports nothing of ours."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SHIPPED_PRICE_BOOK = DATA_DIR / "pricebook.yaml"
"""The price book every component uses when none is configured (``--pricebook``,
``METERING_PRICEBOOK``)."""
SHIPPED_PLANS = DATA_DIR / "plans.yaml"
