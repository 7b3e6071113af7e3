"""Metrics exposition, live config reload and worker argument parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from stub_engine import StubEngine

from pipeline.config_reload import FileEngineSource, LiveEngine
from pipeline.metrics import Metrics
from pipeline.worker import parse_config


def test_metrics_render_prometheus_text() -> None:
    m = Metrics(processed=5)
    m.observe_batch(7)
    m.dead_lettered["t.usage-events"] = 2
    text = m.render({("t.usage-events", 0): 3}).decode()
    assert "metering_processor_events_processed_total 5.0" in text
    assert 'metering_processor_dlq_total{source="t.usage-events"} 2.0' in text
    assert 'metering_processor_batch_size_bucket{le="10"} 1.0' in text
    assert 'metering_processor_consumer_lag{partition="0",topic="t.usage-events"} 3.0' in text


class _Versioned(StubEngine):
    def __init__(self, version: str) -> None:
        self.version = version  # type: ignore[misc]


def test_live_engine_reloads_on_change_and_keeps_the_old_one_on_bad_data(tmp_path: Path) -> None:
    book = tmp_path / "pricebook.yaml"
    book.write_text("v1")

    def build() -> _Versioned:
        text = book.read_text()
        if text == "broken":
            raise ValueError("bad price book")
        return _Versioned(text)

    metrics = Metrics()
    live = LiveEngine(FileEngineSource([book], build), metrics)
    assert live.current().version == "v1"
    assert not live.maybe_reload()
    book.write_text("v22")
    assert live.maybe_reload() and live.current().version == "v22"
    book.write_text("broken")
    assert not live.maybe_reload() and live.current().version == "v22"
    assert metrics.config_reloads == 1 and metrics.config_version == "v22"


def test_worker_defaults_derive_the_app_id_from_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERING_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    config, level = parse_config(["--topic-prefix", "t1.", "--sweep-interval", "0"])
    assert config.app_id == "t1.metering-processor"
    assert config.sweep_interval_s is None and level == "info"


def test_worker_price_book_defaults_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The processor and the enforcement side's feature catalog read the same variable."""
    monkeypatch.setenv("METERING_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.delenv("METERING_PRICEBOOK", raising=False)
    assert parse_config([])[0].pricebook_path is None  # the shipped price book
    monkeypatch.setenv("METERING_PRICEBOOK", str(tmp_path / "book.yaml"))
    monkeypatch.setenv("METERING_PLANS", str(tmp_path / "plans.yaml"))
    config, _ = parse_config([])
    assert config.pricebook_path == tmp_path / "book.yaml"
    assert config.plans_path == tmp_path / "plans.yaml"
    config, _ = parse_config(["--pricebook", "other.yaml"])  # the flag wins
    assert config.pricebook_path == Path("other.yaml")
