"""faust stays behind its door: pinned, patched explicitly, imported by few modules only.

The processor patches faust-streaming 0.15.3 and touches its private parts; an unpinned upgrade
could break exactly-once with no error. These tests keep that contained until the runtime
package of issue 14 replaces the allowlist below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.faust_fixes import FAUST_VERSION, UnsupportedFaustVersion, require_supported_version

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("metering", "pipeline", "consumers", "projections", "schemas")
MAY_IMPORT_FAUST = {
    "pipeline/app.py",
    "pipeline/fast_consumer.py",
    "pipeline/faust_fixes.py",
    "pipeline/table_store.py",
    "pipeline/worker.py",
}


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


def test_only_the_allowlisted_modules_import_faust() -> None:
    found = {
        str(path.relative_to(ROOT))
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if _imports_faust(path)
    }
    assert found <= MAY_IMPORT_FAUST, f"faust imported outside its door: {found - MAY_IMPORT_FAUST}"


def test_the_dependency_is_pinned_to_the_patched_release() -> None:
    assert f'"faust-streaming=={FAUST_VERSION}"' in (ROOT / "pyproject.toml").read_text()
    require_supported_version()  # the installed one


def test_any_other_release_is_refused_with_a_clear_message() -> None:
    with pytest.raises(UnsupportedFaustVersion, match=r"0\.16\.0 is installed.*0\.15\.3"):
        require_supported_version("0.16.0")


def test_importing_the_app_patches_nothing() -> None:
    code = (
        "import asyncio, pipeline.app\n"
        "from faust.tables import recovery\n"
        "from faust.stores import STORES\n"
        "assert recovery.asyncio is asyncio, 'patched on import'\n"
        "assert 'metering-rocksdb' not in STORES.aliases, 'store registered on import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
