"""One declaration of every METERING_* variable (metering.config.ENVIRONMENT), and the README's
configuration table generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metering.config import ENVIRONMENT, env_value, environment_table

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("metering", "pipeline", "consumers", "projections", "schemas")
NAME = re.compile(r"METERING_[A-Z][A-Z0-9_]*[A-Z0-9]")


def test_every_variable_the_code_names_is_declared() -> None:
    used = {
        name
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        for name in NAME.findall(path.read_text("utf-8"))
    }
    declared = {var.name for var in ENVIRONMENT}
    assert used <= declared, f"declare these in metering.config.ENVIRONMENT: {used - declared}"
    assert declared <= used, f"declared but never read: {declared - used}"


def test_the_readme_table_is_the_declaration() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert environment_table() in readme, (
        "README.md's configuration table differs from metering.config.ENVIRONMENT; paste "
        "`python -c 'from metering.config import environment_table as t; print(t())'`"
    )


def test_an_undeclared_variable_cannot_be_read() -> None:
    with pytest.raises(KeyError, match="not declared"):
        env_value("METERING_NOT_A_THING", {})
    assert env_value("METERING_REDIS_PREFIX", {}, "mt:") == "mt:"
    assert env_value("METERING_REDIS_PREFIX", {"METERING_REDIS_PREFIX": "x:"}, "mt:") == "x:"
