"""Deterministic batch cutting: size/time cuts, replay of a recorded intent, tokens."""

from __future__ import annotations

from consumers.batching import (
    BatchAccumulator,
    DeadRecord,
    dedup_token,
    intent_metadata,
    parse_intent,
)

TP = ("usage-events", 3)
OTHER = ("credit-ledger", 3)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_intent_round_trip_and_token() -> None:
    assert parse_intent(intent_metadata(10, 42)) == (10, 42)
    assert parse_intent("") is None
    assert parse_intent(None) is None
    assert parse_intent("eo1:x:1") is None
    assert dedup_token("t", 1, 5, 9) == "t/1/5-9"


def test_cut_by_size_and_by_time() -> None:
    clock = Clock()
    acc = BatchAccumulator(max_rows=3, max_wait_s=1.0, clock=clock)
    acc.add(TP, 0, ("a",))
    acc.add(OTHER, 7, ("b",))
    assert not acc.due()
    clock.now = 1.5
    assert acc.due()
    batches = sorted(acc.cut(), key=lambda b: b.topic)
    assert [(b.topic, b.first_offset, b.last_offset) for b in batches] == [
        ("credit-ledger", 7, 7),
        ("usage-events", 0, 0),
    ]
    assert acc.empty and not acc.due()
    for offset in (1, 2, 4):  # gaps (transaction markers) are fine
        acc.add(TP, offset, ("x",))
    assert acc.due()
    (batch,) = acc.cut()
    assert (batch.first_offset, batch.last_offset, batch.next_offset) == (1, 4, 5)
    assert batch.token == "usage-events/3/1-4"
    assert batch.intent == "eo1:1:4"


def test_dead_records_keep_their_offsets_in_the_range() -> None:
    acc = BatchAccumulator(max_rows=10)
    acc.add(TP, 5, DeadRecord(5, ValueError("bad")))
    acc.add(TP, 6, ("ok",))
    (batch,) = acc.cut()
    assert (batch.first_offset, batch.last_offset) == (5, 6)
    assert len(batch.rows) == 1 and batch.dead[0].offset == 5


def test_replay_reforms_exactly_the_recorded_range() -> None:
    """After a crash the first batch ends at the intent's last offset, whatever else arrives."""
    clock = Clock()
    acc = BatchAccumulator(max_rows=2, max_wait_s=0.1, clock=clock)
    acc.set_replay(TP, 10, 14)
    for offset in (10, 11, 12):
        acc.add(TP, offset, ("r",))
    clock.now = 5.0
    assert acc.cut() == []  # size and time say flush, but the replay range is incomplete
    acc.add(TP, 14, ("r",))
    assert acc.due()
    acc.add(TP, 15, ("next",))
    (replayed, following) = acc.cut()
    assert (replayed.first_offset, replayed.last_offset, len(replayed.rows)) == (10, 14, 4)
    assert (following.first_offset, following.last_offset) == (15, 15)
    assert not acc.replaying(TP)


def test_replay_closes_early_if_the_last_record_is_gone() -> None:
    acc = BatchAccumulator()
    acc.set_replay(TP, 10, 14)
    acc.add(TP, 10, ("r",))
    acc.add(TP, 16, ("n",))
    batches = acc.cut()
    assert [(b.first_offset, b.last_offset) for b in batches] == [(10, 10), (16, 16)]


def test_drop_forgets_revoked_partitions() -> None:
    acc = BatchAccumulator()
    acc.set_replay(TP, 0, 3)
    acc.add(TP, 0, ("r",))
    acc.add(OTHER, 0, ("o",))
    acc.drop([TP])
    assert not acc.replaying(TP)
    assert [b.topic for b in acc.cut()] == ["credit-ledger"]


def test_extend_matches_add_and_honours_replay() -> None:
    """The sink's bulk path gives the same batches as per-record adds, replay cuts included."""
    acc = BatchAccumulator(max_rows=100)
    acc.extend(TP, [3, 4, 6], [b"a", b"b", b"c"])
    acc.extend(TP, [7], [b"d"])
    assert acc.due() is False
    (batch,) = acc.cut()
    assert (batch.first_offset, batch.last_offset) == (3, 7)
    assert batch.rows == [b"a", b"b", b"c", b"d"] and batch.offsets == [3, 4, 6, 7]

    acc.set_replay(TP, 8, 9)
    acc.extend(TP, [8, 9, 10], [b"x", b"y", b"z"])
    assert acc.due()  # the replayed range is complete
    replayed, following = acc.cut()
    assert (replayed.first_offset, replayed.last_offset, replayed.offsets) == (8, 9, [8, 9])
    assert (following.first_offset, following.offsets) == (10, [10])
    assert acc.empty


def test_rows_counts_what_the_next_cut_would_take() -> None:
    """The sink flushes early on this count when no insert is in flight (``EAGER_ROWS``)."""
    acc = BatchAccumulator(max_rows=100, max_wait_s=1.0, clock=Clock())
    acc.add(TP, 0, ("a",))
    acc.extend(OTHER, [7, 8, 9], [("b",), ("c",), ("d",)])
    assert acc.rows == 4
    assert not acc.due()
    assert sum(len(b.rows) for b in acc.cut()) == 4
    assert acc.rows == 0
