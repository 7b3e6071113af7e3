"""Records match the Avro contracts; state and idempotency memory survive their byte form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from engine_testkit import APR_1, CREDIT, DAY, T0, Ledger, command, image, make_engine, text

from metering.domain import (
    AccountOverride,
    AccountState,
    AutoTopupConfig,
    CreditAlert,
    CreditCommand,
    EntryType,
    LedgerEntry,
    UsageEvent,
)
from metering.domain.dedupe import DedupeWindow, id_hash

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def _schema(name: str) -> Any:
    """The newest contract (what the codec writes), minus logical types (the codec keeps
    timestamps as plain ints too)."""
    newest = max(SCHEMAS.glob(f"{name}.v*.avsc"), key=lambda p: int(p.name.split(".v")[1][:-5]))
    text = newest.read_text()
    return fastavro.parse_schema(json.loads(text.replace('"logicalType"', '"_logical"')))


def _roundtrip(schema: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Encode and decode with fastavro: proves the dict matches the schema exactly."""
    assert fastavro.validation.validate(record, schema, strict=True)
    import io

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    decoded: dict[str, Any] = fastavro.schemaless_reader(buf, schema)
    return decoded


def _busy_ledger() -> Ledger:
    acct = Ledger(make_engine())
    acct.command(command("assign_plan", "p", T0, plan_id="starter"))
    acct.command(command("purchase", "b", T0, amount=50 * CREDIT, expires_at=T0 + 40 * DAY,
                         cost_basis_micros=10_000))  # fmt: skip
    acct.command(command("set_override", "o", T0 + 1, override=AccountOverride(
        overage_policy="allow", overage_limit=10 * CREDIT, trial_features=("x",),
        trial_until=T0 + DAY)))  # fmt: skip
    acct.command(command("configure_auto_topup", "a", T0 + 2, auto_topup=AutoTopupConfig(
        True, 100 * CREDIT, 500 * CREDIT)))  # fmt: skip
    for i in range(70):
        acct.usage(image(f"i{i}", T0 + 10 + i, reservation_id=f"r{i}"))
    acct.usage(text("apr", APR_1 + 5))  # reset: 250 unused roll over
    acct.command(command("adjustment", "adj", APR_1 + 6, amount=-2200 * CREDIT))
    acct.command(command("void_grant", "v", APR_1 + 7, grant_id="b"))
    for i in range(3):  # 49 left: debit, debit + overage, overage + rejected
        acct.usage(image(f"apr{i}", APR_1 + 10 + i))
    acct.command(command("void_grant", "v2", APR_1 + 20, grant_id="nope"))
    acct.command(command("void_usage", "vu", APR_1 + 21, event_id="apr1", reason="model failed"))
    return acct


def test_ledger_entries_and_alerts_match_the_avro_schemas() -> None:
    acct = _busy_ledger()
    assert {e.type for e in acct.entries} == set(EntryType)
    entry_schema = _schema("ledger_entry")
    for entry in acct.entries:
        record = entry.to_record()
        assert LedgerEntry.from_record(_roundtrip(entry_schema, record)) == entry
    alert_schema = _schema("credit_alert")
    alerts = [a for o in acct.outcomes for a in o.alerts]
    assert alerts
    for alert in alerts:
        assert CreditAlert.from_record(_roundtrip(alert_schema, alert.to_record())) == alert


def test_usage_events_and_commands_round_trip_through_avro() -> None:
    event = UsageEvent("e", "a", "text_generation", {"requests": 1}, T0, subject="design",
                       model="gpt-4o", attributes={"k": "v"}, reservation_id="r")  # fmt: skip
    decoded = _roundtrip(_schema("usage_event"), event.to_record())
    assert UsageEvent.from_record(decoded) == event
    cmd = command("set_override", "c", T0, override=AccountOverride(5, "allow", 7, ("f",), T0),
                  auto_topup=AutoTopupConfig(True, 1, 2, 3, 4))  # fmt: skip
    decoded = _roundtrip(_schema("credit_command"), cmd.to_record())
    assert CreditCommand.from_record(decoded) == cmd


def test_state_survives_bytes_and_behaves_identically_afterwards() -> None:
    acct = _busy_ledger()
    engine = acct.engine
    blob = acct.state.to_bytes()
    copy = AccountState.from_bytes(blob)
    assert copy.view() == acct.state.view()
    assert copy.to_bytes() == blob
    later = [text("x1", APR_1 + 100), image("x2", APR_1 + 200), text("i3", T0 + 13)]
    for ev in later:
        a = engine.apply_usage(acct.state, ev, 1)
        b = engine.apply_usage(copy, ev, 1)
        assert (a.entries, a.alerts, a.duplicate) == (b.entries, b.alerts, b.duplicate)
    assert (
        engine.sweep(acct.state, APR_1 + 60 * DAY).entries
        == engine.sweep(copy, APR_1 + 60 * DAY).entries
    )


def test_dedupe_window_evicts_by_count_and_time_and_tracks_the_watermark() -> None:
    window = DedupeWindow(window_ms=1000, max_ids=100)
    keys = [id_hash(f"e{i}") for i in range(300)]
    for i, key in enumerate(keys[:150]):
        window.add(key, i)
    assert len(window) == 100
    assert keys[49] not in window and keys[50] in window and keys[149] in window
    assert window.watermark == 49
    window.add(keys[150], 5000)  # everything older than 4000 leaves
    assert len(window) == 1 and keys[150] in window and window.watermark == 149
    for i, key in enumerate(keys[151:], start=5001):
        window.add(key, i)
    restored = DedupeWindow.from_bytes(window.to_bytes(), 1000, 100)
    assert len(restored) == len(window)
    assert all((k in restored) == (k in window) for k in keys)
    assert restored.watermark == window.watermark


@pytest.mark.parametrize("ids", [10_000])
def test_dedupe_memory_per_id_is_within_budget(ids: int) -> None:
    window = DedupeWindow(window_ms=10**12, max_ids=ids)
    for i in range(ids):
        window.add(id_hash(str(i)), i)
    assert window.memory_bytes() / ids <= 64
    assert len(window.to_bytes()) / ids <= 17


def test_bench_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.engine import main

    assert main(["--json", "--events", "2000", "--accounts", "50"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["events_per_s"] > 0
    assert result["bytes_per_event_id_memory"] <= result["bytes_per_event_id_memory_target"]
    assert result["bytes_per_event_id_disk"] <= result["bytes_per_event_id_disk_target"]
