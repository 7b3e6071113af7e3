"""Pure parts of the projection's self-heal: what to read, which gaps to repair, the log line."""

from __future__ import annotations

from fnmatch import fnmatchcase

from projections.apply import Gap
from projections.consumer import Metrics
from projections.keys import account_keys, account_pattern, sentinel_key, sentinel_pattern
from projections.self_heal import Repair, gap_reason, gaps_to_repair


def test_gaps_are_grouped_by_partition_and_tried_once() -> None:
    gaps = [Gap("a", 0, 7, 0), Gap("b", 3, 5, 2), Gap("c", 1, 9, 3)]
    positions = [(2, 100), (2, 101), (2, 102), (4, 50)]
    assert gaps_to_repair(gaps, positions, {}) == {2: gaps[:2], 4: [gaps[2]]}
    tried = {2: {("b", 3, 5)}, 4: {("c", 1, 8)}}  # c's next seq changed: a new gap
    assert gaps_to_repair(gaps, positions, tried) == {2: [gaps[0]], 4: [gaps[2]]}


def test_gap_reason_tells_lost_keys_from_keys_behind() -> None:
    lost, behind = Gap("a", 0, 7, 0), Gap("b", 3, 5, 1)
    assert gap_reason([lost]) == "seq gap, account keys gone"
    assert gap_reason([behind]) == "seq gap, account behind"
    assert gap_reason([lost, behind]) == "seq gap, account behind / account keys gone"


def test_repair_log_line_says_what_was_rebuilt() -> None:
    whole = Repair("ledger", "sentinel missing", [0, 3], ["a", "b"], 40, 38, 1.234)
    assert whole.describe() == (
        "self-heal (sentinel missing): rebuilt partitions [0, 3] of ledger from the ledger: "
        "2 accounts, 40 entries (38 applied) in 1.23s"
    )
    names = [f"acct-{i:02d}" for i in range(12)]
    some = Repair("ledger", "seq gap", [5], names, 1, 1, 0.5, whole_partitions=False)
    some.gaps.append("acct-03: stored 3, got 5")
    some.lost_again.append(5)
    text = some.describe()
    assert "rebuilt accounts [acct-00, " in text and "acct-09, ... 2 more] on partition 5" in text
    assert "12 accounts, 1 entry (1 applied)" in text
    assert "still gapped, held: acct-03: stored 3, got 5" in text
    assert "Redis lost data again meanwhile, partitions [5] redone next" in text


def test_sentinels_stay_outside_the_account_layout() -> None:
    key = sentinel_key("mt:", "p.credit-ledger", 4)
    assert key == "mt:projection:p.credit-ledger:4" and "{" not in key  # one plain key
    assert not fnmatchcase(key, account_pattern("mt:"))  # rebuild's clear/scan skip it
    assert fnmatchcase(key, sentinel_pattern("mt:"))
    assert not fnmatchcase(account_keys("mt:", "projection").balance, sentinel_pattern("mt:"))


def test_self_heal_counters_are_exported() -> None:
    text = Metrics(self_heals=2, self_heal_accounts=7, self_heal_errors=1).render().decode()
    assert "metering_projection_self_heals_total 2.0\n" in text
    assert "metering_projection_self_heal_accounts_total 7.0\n" in text
    assert "metering_projection_self_heal_entries_total 0.0\n" in text
    assert "metering_projection_self_heal_errors_total 1.0\n" in text
    assert "# TYPE metering_projection_paused_partitions gauge" in text
