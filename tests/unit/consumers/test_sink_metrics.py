"""The sink's Prometheus metrics (``metering run sink --metrics-port``)."""

from __future__ import annotations

import urllib.request

from consumers.sink import SinkStats
from metering.metrics import exposition, serve
from metering.net import free_port


def test_sink_metrics_are_served_with_consistent_names() -> None:
    stats = SinkStats(rows=30, dead=2, batches=3, per_table={"usage_events": 20, "ledger": 10})
    port = free_port()
    server = serve(lambda: exposition(stats.families), port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        server.shutdown()
    assert 'metering_sink_rows_inserted_total{table="usage_events"} 20.0' in text
    assert "metering_sink_undecodable_total 2.0" in text
    assert "metering_sink_batches_total 3.0" in text
    assert "metering_sink_last_flush_age_seconds -1.0" in text
