"""Every pipeline integration test ends with ``metering reconcile --ledger-only`` on its ledger.

The ledger audit (gap-free ``seq`` that never restarts, unique ``entry_id``, the
``balance_after`` chain, each grant's remaining within ``[0, amount]``) must hold whatever the
test did to the processor: kills, restarts, rebalances, re-sends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumers.reconcile import main as reconcile_main
from metering.topics import TopicNames


@pytest.fixture(autouse=True)
def ledger_audited_after_each_test(
    topics: TopicNames, capsys: pytest.CaptureFixture[str]
) -> Iterator[None]:
    yield
    code = reconcile_main(["--ledger-only", "--topic-prefix", topics.prefix])
    out = capsys.readouterr().out
    assert code == 0, f"metering reconcile --ledger-only failed:\n{out}"
    assert "ledger audit: 0 entries" not in out, "the audit read no ledger at all"
