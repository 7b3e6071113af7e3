"""The first pass of ``metering backfill``: reading, refusing with reasons, duplicates, totals."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from fastavro import parse_schema, writer

from metering.avro import USAGE_EVENT, AvroCodec, load_catalog, load_registry
from metering.backfill.scan import Refusal, scan
from metering.backfill.source import MAX_LINE_BYTES, read_records
from metering.backfill.spill import Spill
from metering.backfill.window import DAY_MS, Window
from metering.domain import load_price_book
from metering.sdk import usage_encoder

NOW = 1_767_225_600_000  # 2026-01-01
WINDOW = Window.ending(NOW, 35 * DAY_MS)
PRICES = load_price_book()
ENCODE = usage_encoder(AvroCodec(load_registry(), USAGE_EVENT))


def _event(n: int, **fields: Any) -> dict[str, Any]:
    event = {
        "event_id": f"e{n}",
        "account_id": f"acct-{n % 2}",
        "feature": "image_generation",
        "units": {"images": 1},
        "occurred_at": NOW - DAY_MS,
        "subject": f"s{n % 3}",
    }
    return {**event, **fields}


def _scan(path: Path) -> tuple[Any, list[Refusal]]:
    refused: list[Refusal] = []
    found = scan(read_records(path), PRICES, WINDOW, encode=ENCODE, on_refusal=refused.append)
    return found, refused


def test_each_bad_record_is_refused_with_its_reason_and_the_rest_totalled(tmp_path: Path) -> None:
    lines = [json.dumps(_event(n)) for n in range(6)]
    lines += [
        json.dumps(_event(0)),  # a duplicate inside the file
        "not json",
        "[1, 2]",
        json.dumps(_event(7, units={"images": -1})),
        json.dumps(_event(8, feature="teleport")),
        json.dumps(_event(9, occurred_at=NOW - 40 * DAY_MS)),
        json.dumps(_event(10, occurred_at=NOW + DAY_MS)),
        json.dumps(_event(11, occurred_at="2025-12-31T12:00:00Z")),  # ISO time: accepted
        "",
        "x" * (MAX_LINE_BYTES + 10),
        json.dumps(_event(12, extra=1)),
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(lines) + "\n")
    found, refused = _scan(path)
    assert (found.records, found.accepted, found.duplicates) == (16, 7, 1)
    assert dict(found.refused_by) == {"unreadable": 3, "invalid": 2, "unknown_feature": 1,
                                      "outside_window": 2}  # fmt: skip
    reasons = {r.position: r.reason for r in refused}
    assert reasons[8].startswith("unreadable: not JSON")
    assert reasons[10].startswith("invalid: units['images']: must be in 0..")
    assert reasons[12] == "outside_window: older than the idempotency window"
    assert reasons[13] == "outside_window: in the future"
    assert reasons[16] == f"unreadable: line longer than {MAX_LINE_BYTES} bytes"
    assert reasons[17].startswith("invalid: extra")
    assert sum(t.events for t in found.totals.values()) == 7
    assert sum(t.micros for t in found.totals.values()) == 7 * 25_000_000


def test_an_avro_container_reads_like_json_lines(tmp_path: Path) -> None:
    schema = parse_schema(load_catalog().get(USAGE_EVENT).schema)
    buf = io.BytesIO()
    writer(buf, schema, [_event(n, model=None) for n in range(3)] + [_event(0, model=None)])
    path = tmp_path / "usage.avro"
    path.write_bytes(buf.getvalue())
    found, refused = _scan(path)
    assert (found.records, found.accepted, found.duplicates, refused) == (4, 3, 1, [])


def test_a_truncated_avro_container_is_refused_not_raised(tmp_path: Path) -> None:
    schema = parse_schema(load_catalog().get(USAGE_EVENT).schema)
    buf = io.BytesIO()
    writer(buf, schema, [_event(n, model=None) for n in range(50)])
    path = tmp_path / "usage.avro"
    path.write_bytes(buf.getvalue()[:-20])
    _, refused = _scan(path)
    assert refused and refused[-1].reason.startswith("unreadable: unreadable Avro container")


def test_the_window_keeps_a_margin_from_its_edge() -> None:
    window = Window.ending(NOW, 35 * DAY_MS, margin_ms=DAY_MS)
    assert window.problem(NOW - 34 * DAY_MS + 1) is None
    assert window.problem(NOW - 34 * DAY_MS - 1) is not None
    assert window.problem(NOW + 60_000) is None


def test_the_spill_gives_back_what_was_accepted_encoded_in_order(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    events = [_event(n) for n in range(25)]
    path.write_text("".join(json.dumps(e) + "\n" for e in events + events[:5]))
    with Spill() as spill:
        scan(read_records(path), PRICES, WINDOW, encode=ENCODE, on_refusal=print,
             on_accepted=spill.add)  # fmt: skip
        batches = list(spill.batches(10))
    assert [len(values) for _, values in batches] == [10, 10, 5]
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    sent = [codec.decode(v)["event_id"] for _, values in batches for v in values]
    assert sent == [e["event_id"] for e in events]
    assert batches[0][0][:2] == [b"acct-0", b"acct-1"]
