"""The page's pure helpers (account.js) under Node: axis ticks, grant names, runway text.

``account.js`` exports its pure functions when loaded outside a browser; this runs them with
``node`` (skipped when Node is not installed; the browser test covers the page itself).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).resolve().parents[3] / "accountpage" / "static" / "account.js"
NODE = shutil.which("node") or shutil.which("nodejs")
MICRO = 1_000_000
DEC_1 = 1_796_083_200_000  # 2026-12-01T00:00:00Z
NOV_1 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
AXIS_LABEL = re.compile(r"^-?\d{1,3}(,\d{3})*(\.\d{1,2})?$")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def _js(expression: str) -> Any:
    """Evaluate ``expression`` with the helpers in scope as ``m``; return its JSON value."""
    script = (
        f"const m = require({json.dumps(str(JS))});\n"
        f"process.stdout.write(JSON.stringify({expression}));"
    )
    out = subprocess.run([NODE or "node", "-e", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_credits_formatting_is_exact() -> None:
    assert _js("[16403922900, 181466010300, -1500000, 1, 0].map(m.credits)") == [
        "16,403.9229",
        "181,466.0103",
        "-1.5",
        "0.000001",
        "0",
    ]


@pytest.mark.parametrize(
    ("lo", "hi", "count", "expected"),
    [
        (0, 16_403_922_900, 4, ["0", "5,000", "10,000", "15,000", "20,000"]),
        (0, 181_466_010_300, 4, ["0", "50,000", "100,000", "150,000", "200,000"]),
        (-3_600_000_000, 22_500_000_000, 5, ["-10,000", "0", "10,000", "20,000", "30,000"]),
        (
            -3_600_000_000,
            22_500_000_000,
            8,
            ["-5,000", "0", "5,000", "10,000", "15,000", "20,000", "25,000"],
        ),
        (0, 999_999, 4, ["0", "0.25", "0.5", "0.75", "1"]),
        (0, 1, 4, ["0", "0.01"]),
    ],
)
def test_axis_ticks_are_round_and_have_at_most_two_decimals(
    lo: int, hi: int, count: int, expected: list[str]
) -> None:
    ticks: list[int] = _js(f"m.yTicks({lo}, {hi}, {count})")
    assert ticks[0] <= lo and ticks[-1] >= hi
    assert all(isinstance(t, int) and t % 10_000 == 0 for t in ticks)  # whole 0.01 credits
    labels: list[str] = _js(f"m.yTicks({lo}, {hi}, {count}).map(m.credits)")
    assert labels == expected
    assert all(AXIS_LABEL.match(label) for label in labels)


def test_axis_ticks_for_many_scales() -> None:
    tops = [7, 10_000, 123_456, 9_999_999, 16_403_922_900, 2**52]
    for top in tops:
        labels: list[str] = _js(f"m.yTicks(0, {top}, 4).map(m.credits)")
        assert 2 <= len(labels) <= 6, (top, labels)
        assert all(AXIS_LABEL.match(label) for label in labels), (top, labels)


def test_grant_names_are_for_people() -> None:
    now = DEC_1 + 4 * 86_400_000
    grants = [
        {"grant_id": f"plan:{DEC_1}", "source": "plan", "effective_at": DEC_1},
        {"grant_id": "plan:acme-plan", "source": "plan", "effective_at": NOV_1 + 13 * 86_400_000},
        {"grant_id": f"rollover:{DEC_1}", "source": "rollover", "effective_at": DEC_1},
        {"grant_id": f"rollover:{NOV_1}", "source": "rollover", "effective_at": 0},
        {"grant_id": "acme-topup", "source": "purchase", "effective_at": DEC_1 + 2 * 86_400_000},
        {"grant_id": "globex-promo", "source": "promotion", "effective_at": DEC_1},
        {"grant_id": "fix-1", "source": "adjustment", "effective_at": NOV_1 - 40 * 86_400_000},
        {"grant_id": "g", "source": "gift", "effective_at": 0},
    ]
    names = _js(f"{json.dumps(grants)}.map((g) => m.grantLabel(g, {now}))")
    assert names == [
        "Monthly credits, December",
        "Monthly credits, November",
        "Rollover from November",
        "Rollover from October",
        "Purchase, 3 Dec",
        "Promotion, 1 Dec",
        "Adjustment, 22 Sep",
        "Gift",
    ]
    # January's rollover comes from December of the year before.
    jan_1 = 1_798_761_600_000  # 2027-01-01
    assert _js(f'm.grantLabel({{grant_id: "rollover:{jan_1}", source: "rollover"}}, {jan_1})') == (
        "Rollover from December"
    )


def test_runway_text() -> None:
    now = DEC_1
    cases = {
        "runs_out": f"{{status: 'runs_out', runout_ms: {DEC_1 + 13 * 86_400_000 + 5}}}",
        "outlasts": "{status: 'outlasts', runout_ms: null}",
        "no_usage": "{status: 'no_usage', runout_ms: null}",
        "exhausted": "{status: 'exhausted', runout_ms: null}",
    }
    texts = _js("[" + ", ".join(f"m.runwayText({c}, {now})" for c in cases.values()) + "]")
    assert texts == [
        "At this pace, credits run out on 14 Dec",
        "Credits outlast this period at the current pace",
        "No usage in the last 7 days",
        "No credits left",
    ]
