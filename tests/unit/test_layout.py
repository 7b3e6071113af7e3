"""The layout shows the architecture: who may import whom, small files, a word per folder.

Product packages (``metering``, ``pipeline``, ``projections``, ``consumers``, ``schemas``) never
import the composition roots (``cli``, ``accountpage``, ``demo``, ``devstack``,
``benchmarks``); the domain imports no other package; only the processor's worker imports its
faust runtime. Every package says in its docstring what it owns and what it may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("metering", "pipeline", "projections", "consumers", "schemas")
ROOTS = ("accountpage", "benchmarks", "cli", "demo", "devstack")
LAYERS = {
    # package -> the packages it may import (besides itself, the standard library, third parties)
    "metering.domain": set(),
    "metering.data": set(),
    "schemas": set(),
    "metering.avro": {"metering", "schemas"},
    "metering.sdk": {"metering", "metering.avro", "metering.domain"},
    "metering.backfill": {"metering", "metering.avro", "metering.domain", "metering.sdk"},
    "metering": {"metering.avro", "metering.domain", "metering.data", "schemas"},
    "pipeline": {"metering", "metering.avro", "metering.domain", "metering.data"},
    "pipeline.runtime": {"metering", "metering.avro", "pipeline"},
    "projections": {"metering", "metering.avro", "metering.domain", "metering.data"},
    "consumers": {"metering", "metering.avro", "metering.domain", "projections"},
    "devstack": {"metering"},
}
MAY_IMPORT_THE_RUNTIME = {"pipeline/worker.py"}
MAX_LINES = 500
SUBPACKAGES = (
    "metering.domain",
    "metering.avro",
    "metering.sdk",
    "metering.backfill",
    "metering.data",
    "pipeline.runtime",
)


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PRODUCT + ROOTS:
        return None
    two = ".".join(parts[:2])
    return two if two in SUBPACKAGES else parts[0]


def _sources() -> list[Path]:
    return [p for top in PRODUCT + ROOTS for p in (ROOT / top).rglob("*.py")]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_each_package_imports_only_what_its_layer_allows() -> None:
    wrong = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        own = _package(".".join(rel.with_suffix("").parts))
        if own is None or own not in LAYERS:
            continue  # composition roots may import anything
        for module in _imports(path):
            target = _package(module)
            if target is None or target == own:
                continue
            if target == "pipeline.runtime" and str(rel) in MAY_IMPORT_THE_RUNTIME:
                continue
            if target not in LAYERS[own]:
                wrong.append(f"{rel} imports {module}")
    assert wrong == []


def test_no_source_file_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _sources()
        if (n := len(path.read_text("utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize("package", [*PRODUCT, *ROOTS, *(p.replace(".", "/") for p in SUBPACKAGES)])
def test_every_package_says_what_it_owns_and_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text("utf-8")))
    assert doc, f"{package}/__init__.py has no docstring"
    assert "import" in doc.lower(), f"{package}: say what it may import"
