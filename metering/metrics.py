"""Prometheus exposition for every long-running service, through ``prometheus_client``.

Services keep plain integer counters (cheap on their hot paths, no lock per increment) and
describe them when scraped: each service gives a function returning its metric families, and
:func:`exposition` renders them with ``prometheus_client.generate_latest``. Names follow
``metering_<component>_<what>_<unit>`` (counters end in ``_total``); the README lists the ones
to alert on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Families = Callable[[], Iterable[Metric]]

__all__ = ["CONTENT_TYPE", "Metric", "counter", "exposition", "gauge", "histogram", "serve"]


class _Describe(Collector):
    def __init__(self, families: Families) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()


def exposition(families: Families) -> bytes:
    """The Prometheus text of ``families()`` (a fresh registry: nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Describe(families))
    return generate_latest(registry)


def counter(
    name: str, doc: str, value: float | Mapping[tuple[str, ...], float], labels: Sequence[str] = ()
) -> CounterMetricFamily:
    """A counter; ``value`` is a number, or label values -> number when ``labels`` are given."""
    family = CounterMetricFamily(name, doc, labels=list(labels) or None)
    _fill(family, value, labels)
    return family


def gauge(
    name: str, doc: str, value: float | Mapping[tuple[str, ...], float], labels: Sequence[str] = ()
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels) or None)
    _fill(family, value, labels)
    return family


def histogram(
    name: str,
    doc: str,
    bounds: Sequence[float],
    cumulative: Sequence[int],
    count: int,
    total: float,
) -> HistogramMetricFamily:
    """A histogram from cumulative bucket counts (``cumulative[i]`` = observations <= bound i)."""
    buckets = [(str(b), float(n)) for b, n in zip(bounds, cumulative, strict=True)]
    buckets.append(("+Inf", float(count)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


def _fill(
    family: CounterMetricFamily | GaugeMetricFamily,
    value: float | Mapping[tuple[str, ...], float],
    labels: Sequence[str],
) -> None:
    if not labels:
        assert not isinstance(value, Mapping)
        family.add_metric([], value)
        return
    assert isinstance(value, Mapping)
    for label_values, number in sorted(value.items()):
        family.add_metric(list(label_values), number)


def serve(render: Callable[[], bytes], port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """``GET /metrics`` answered with ``render()`` by a daemon thread (services without a web
    server of their own: the projection, the sink). ``shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/metrics"
            body = render() if found else b"not found\n"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
