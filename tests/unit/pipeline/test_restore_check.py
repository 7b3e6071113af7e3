"""The restore check: which accounts' restored seq disagrees with the ledger's last one."""

from __future__ import annotations

from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.domain import CreditCommand, CreditEngine, EngineConfig, load_plans, load_price_book
from metering.domain.state import AccountState
from pipeline.fast_avro import ledger_entry_head
from pipeline.restore_check import SeqMismatch, ids_lost, mismatches


def test_agreeing_tables_have_no_mismatch() -> None:
    assert mismatches({"a": 3, "b": 1, "idle": 0}, {"a": 3, "b": 1}) == []


def test_a_restore_that_lost_state_names_every_account() -> None:
    assert mismatches({}, {"a": 3, "b": 1}) == [SeqMismatch("a", 0, 3), SeqMismatch("b", 0, 1)]


def test_state_ahead_of_or_without_a_ledger_is_a_mismatch() -> None:
    assert mismatches({"a": 4, "ghost": 2}, {"a": 3}) == [
        SeqMismatch("a", 4, 3),
        SeqMismatch("ghost", 2, 0),
    ]


def test_an_account_whose_last_charged_event_is_not_remembered_is_rebuilt() -> None:
    """State and ledger agree by seq, but the id store lost the newest ids: a re-sent event
    would be charged twice, so the account is rebuilt from the ledger, ids included."""
    charges = {
        "kept": {"type": "USAGE_DEBIT", "cause_id": "e1", "reason": None},
        "lost": {"type": "OVERAGE", "cause_id": "e2", "reason": None},
        "rejected": {"type": "USAGE_REJECTED", "cause_id": "e3", "reason": "insufficient"},
        "late": {"type": "USAGE_DEBIT", "cause_id": "e4", "reason": "outside_dedupe_window"},
    }
    seqs = {"kept": 3, "lost": 7, "rejected": 2, "late": 9}
    remembered = {("kept", "e1")}
    lost = ids_lost(charges, seqs, lambda a, e: (a, e) in remembered)
    assert lost == [SeqMismatch("lost", 7, 7), SeqMismatch("rejected", 2, 2)]


def test_ledger_entry_head_reads_id_account_and_seq_of_a_framed_entry() -> None:
    codec = AvroCodec(load_registry(), LEDGER_ENTRY)
    engine = CreditEngine(load_price_book(None), load_plans(None), EngineConfig())
    state = engine.new_state("acct-é7")
    cmd = CreditCommand.from_record(
        {
            "command_id": "c1",
            "account_id": state.account_id,
            "kind": "promotion",
            "amount": 5_000_000,
            "issued_at": 1_767_225_600_000,
        }
    )
    entries = engine.apply_command(state, cmd, 1_767_225_600_000).entries
    assert entries
    for entry in entries:
        value = codec.encode(entry.to_record())
        assert ledger_entry_head(value) == (entry.entry_id, entry.account_id, entry.seq)
    assert AccountState.seq_of(state.to_bytes()) == state.seq
