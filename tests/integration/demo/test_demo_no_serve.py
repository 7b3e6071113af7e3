"""``metering demo --no-serve`` plays the whole story against the session's stack and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metering.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


def test_demo_no_serve_exits_zero(stack: object, tmp_path: Path) -> None:
    env = dict(os.environ, METERING_STATE_DIR=str(tmp_path), COLUMNS="120")
    if load_settings().clickhouse_is_embedded:
        # chDB allows one process per path, and this pytest process may hold the session's.
        env["METERING_CLICKHOUSE_URL"] = f"chdb://{tmp_path / 'clickhouse'}"
    for key in ("METERING_API_KEYS", "METERING_ADMIN_KEY", "METERING_ACCOUNT_KEYS"):
        env.pop(key, None)
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--no-serve", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "DENIED" in out and "insufficient_credits" in out, out[-4000:]
    assert "Usage by subject" in out
    assert "stopping the demo's services" in out
