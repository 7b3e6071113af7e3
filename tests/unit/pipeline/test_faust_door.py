"""faust stays behind its door: pinned, patched explicitly, imported by few modules only.

The processor patches faust-streaming 0.15.3 and touches its private parts; an unpinned upgrade
could break exactly-once with no error. These tests keep all of it inside ``pipeline/runtime``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runtime.fixes import (
    AIOKAFKA_VERSION,
    FAUST_VERSION,
    UnsupportedFaustVersion,
    require_supported_version,
)

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("metering", "pipeline", "consumers", "projections", "schemas")
RUNTIME = "pipeline/runtime/"


def _imports_faust(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        if any(n.split(".")[0] in ("faust", "mode") for n in names):
            return True
    return False


def _product_modules() -> list[tuple[str, str]]:
    """(path relative to the repo, source) of every product module outside the runtime."""
    return [
        (rel, path.read_text("utf-8"))
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if not (rel := str(path.relative_to(ROOT))).startswith(RUNTIME)
    ]


def test_only_the_runtime_package_imports_faust() -> None:
    found = [rel for rel, _ in _product_modules() if _imports_faust(ROOT / rel)]
    assert found == [], f"faust imported outside pipeline/runtime: {found}"


PRIVATE_FAUST_PARTS = (
    "_committed_offset",
    "_trn_locks",
    "_transaction_producers",
    "_db_for_partition",
    "_drain_messages",
    "_buffered_partitions",
    "_read_offset",
    "_add_gap",
    "_dbs",
    "changelog_topic",
    ".assignor",
    "consumer_generation_id",
)


def test_no_module_outside_the_runtime_touches_a_private_faust_part() -> None:
    touched = {
        (rel, part)
        for rel, text in _product_modules()
        for part in PRIVATE_FAUST_PARTS
        if part in text
    }
    assert touched == set(), f"faust internals used outside pipeline/runtime: {sorted(touched)}"


def test_the_dependencies_are_pinned_to_the_patched_releases() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"faust-streaming=={FAUST_VERSION}"' in pyproject
    assert f'"aiokafka=={AIOKAFKA_VERSION}"' in pyproject
    require_supported_version()  # the installed ones
    require_supported_version(package="aiokafka")


def test_any_other_release_is_refused_with_a_clear_message() -> None:
    with pytest.raises(UnsupportedFaustVersion, match=r"0\.16\.0 is installed.*0\.15\.3"):
        require_supported_version("0.16.0")
    with pytest.raises(UnsupportedFaustVersion, match=r"aiokafka 0\.15\.0 is installed.*0\.14\.0"):
        require_supported_version("0.15.0", package="aiokafka")


def test_importing_the_app_patches_nothing() -> None:
    code = (
        "import asyncio, pipeline.runtime\n"
        "from faust.tables import recovery\n"
        "from faust.stores import STORES\n"
        "assert recovery.asyncio is asyncio, 'patched on import'\n"
        "assert 'metering-rocksdb' not in STORES.aliases, 'store registered on import'\n"
        "from aiokafka.client import AIOKafkaClient\n"
        "assert AIOKafkaClient._wait_on_metadata.__module__ == 'aiokafka.client', 'patched'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
