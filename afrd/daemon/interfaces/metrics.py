"""Prometheus metrics over plain HTTP: GET /metrics.

afrd_parts_total{verdict}, afrd_product_parts_total{product,verdict} (cells with [[product]]
recipes: one series per recipe, bounded), afrd_errors_total{code}, afrd_stage_seconds{stage} histograms
(acquire, infer, publish, overhead, total; lights when [lights_preview] is on), afrd_queue_depth{queue}, afrd_threshold{product},
afrd_paused, afrd_in_flight, afrd_metrics_refused_total, afrd_up, an interface's own
(``add_section``: afrd_mqtt_*), and the drift watch's (``add_drift``, afrd.daemon.drift):
afrd_score{product,model,sha256} histograms of judged scores (buckets at fractions of the
threshold), afrd_drift{product} (PSI of passed parts against the calibration),
afrd_drift_frr_implied{product} and afrd_drift_warning{product}; every series carries ``cell``. The values and the exposition
are ``prometheus_client``'s (a registry per daemon, no ``_created`` series); docs/grafana/afrd.json is a dashboard over them. bench/metrics.py measures
its cost per part against the hand-written exporter it replaced.

The port is unauthenticated, so it must not be a way to starve the daemon: at most
``max_connections`` are served at once (more are closed on accept, counted in
``afrd_metrics_refused_total``), each socket read/write times out after ``timeout_s``, and a
connection serves one request (HTTP/1.0). Bind it to loopback unless a scraper elsewhere needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from afrd.config.endpoints import listen_error

prometheus_client.disable_created_metrics()  # no afrd_*_created series beside the counters

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("acquire", "infer", "publish", "overhead", "total", "lights")  # lights: opt-in preview
VERDICTS = ("pass", "fail", "error")
# generate_latest() writes text format 0.0.4, which every Prometheus reads (the library's
# CONTENT_TYPE_LATEST names 1.0.0, which older servers do not know)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The daemon's metrics: counters and stage histograms updated per part, gauges read from
    the daemon at scrape time (``queue_fn``, ``gauges_fn``, ``thresholds_fn``, ``refused_fn``).
    ``parts`` (counts by verdict) is what `status` reports."""

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self._lock = threading.Lock()
        self.parts = dict.fromkeys(VERDICTS, 0)
        self.queue_fn: Callable[[], dict[str, int]] = dict
        self.gauges_fn: Callable[[], dict[str, float]] = dict
        self.thresholds_fn: Callable[[], dict[str, float]] = dict  # product -> threshold
        self.refused_fn: Callable[[], int] = int  # metrics connections closed over the cap
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        parts = Counter("afrd_parts", "Parts inspected by verdict", ["cell", "verdict"], registry=r)
        self._product_parts = Counter(
            "afrd_product_parts",
            "Parts inspected by product recipe and verdict",
            ["cell", "product", "verdict"],
            registry=r,
        )
        self._errors = Counter(
            "afrd_errors", "Error verdicts by reason", ["cell", "code"], registry=r
        )
        stage = Histogram(
            "afrd_stage_seconds",
            "Per-part time per pipeline stage",
            ["cell", "stage"],
            buckets=BUCKETS,
            registry=r,
        )
        # children made once: a part's update is then a lock and an add per series
        self._parts = {v: parts.labels(cell, v) for v in VERDICTS}
        self._parts_metric = parts
        self._stage = {s: stage.labels(cell, s) for s in STAGES}
        r.register(_ScrapeTime(self))

    def part(self, verdict: str, code: str | None = None, recipe: str | None = None) -> None:
        """Count one published part; ``recipe``: its [[product]] recipe's name (None for a cell
        without recipes, or a product without one: product labels stay bounded)."""
        if recipe is not None:
            self._product_parts.labels(self.cell, recipe, verdict).inc()
        with self._lock:
            self.parts[verdict] = self.parts.get(verdict, 0) + 1
        child = self._parts.get(verdict)
        if child is None:
            child = self._parts[verdict] = self._parts_metric.labels(self.cell, verdict)
        child.inc()
        if code:
            self._errors.labels(self.cell, code).inc()

    def observe(self, stage: str, seconds: float | None) -> None:
        if seconds is None or seconds != seconds:
            return
        self._stage[stage].observe(seconds)

    def add_section(
        self, prefix: str, section: Callable[[], dict], series: tuple[tuple[str, bool, str], ...]
    ) -> None:
        """An interface's own series, read at scrape time from its status section (``section()``,
        e.g. the MQTT link's ``describe``): each (key, is_counter, help) of ``series`` becomes
        ``<prefix>_<key>`` (``_total`` for a counter)."""
        self.registry.register(_Section(prefix, self.cell, section, series))

    def add_drift(self, book: Any) -> None:
        """The drift watch's series (``book``: afrd.daemon.drift.DriftBook), read at scrape
        time: a part costs the watch's own bucket count, nothing here."""
        self.registry.register(_Drift(self.cell, book))

    def render(self) -> str:
        """The exposition text (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry).decode()


class _ScrapeTime:
    """The series read from the daemon when scraped (no per-part cost)."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m, cell = self.m, self.m.cell
        up = GaugeMetricFamily("afrd_up", "1 while the daemon runs", labels=["cell"])
        up.add_metric([cell], 1)
        yield up
        q = GaugeMetricFamily(
            "afrd_queue_depth", "Items waiting in each pipeline queue", labels=["cell", "queue"]
        )
        for name, n in m.queue_fn().items():
            q.add_metric([cell, name], n)
        yield q
        t = GaugeMetricFamily(
            "afrd_threshold", "Verdict threshold per product recipe", labels=["cell", "product"]
        )
        for product, v in m.thresholds_fn().items():
            t.add_metric([cell, product], v)
        yield t
        for name, v in m.gauges_fn().items():
            g = GaugeMetricFamily(f"afrd_{name}", f"afrd {name.replace('_', ' ')}", labels=["cell"])
            g.add_metric([cell], v)
            yield g
        c = CounterMetricFamily(
            "afrd_metrics_refused",
            "Metrics connections closed over max_connections",
            labels=["cell"],
        )
        c.add_metric([cell], m.refused_fn())
        yield c


class _Section:
    def __init__(self, prefix: str, cell: str, section: Callable[[], dict], series: tuple) -> None:
        self.prefix, self.cell, self.section, self.series = prefix, cell, section, series

    def collect(self) -> Iterator[Metric]:
        values = self.section()
        for key, counter, help_ in self.series:
            family = CounterMetricFamily if counter else GaugeMetricFamily
            m = family(f"{self.prefix}_{key}", help_, labels=["cell"])
            m.add_metric([self.cell], float(values[key]))
            yield m


class _Drift:
    GAUGES = (  # (name, help, key of the status section)
        ("afrd_drift", "PSI of passed parts' scores against the calibration", "psi"),
        ("afrd_drift_frr_implied", "False-reject rate the score drift implies", "frr_implied"),
        ("afrd_drift_warning", "1 while the drift watch warns", "warning"),
    )

    def __init__(self, cell: str, book: Any) -> None:
        self.cell, self.book = cell, book

    def collect(self) -> Iterator[Metric]:
        hists, judged = self.book.series()
        h = HistogramMetricFamily(
            "afrd_score",
            "Scores of judged parts by product and model (buckets: fractions of the threshold)",
            labels=["cell", "product", "model", "sha256"],
        )
        for w in hists:
            les = [repr(float(e)) for e in w["edges"]] + ["+Inf"]
            model = w["model"]
            labels = [self.cell, w["product"], model.get("name", ""), model.get("sha256", "")[:12]]
            h.add_metric(labels, list(zip(les, w["cumulative"], strict=True)), w["sum"])
        yield h
        for name, help_, key in self.GAUGES:
            g = GaugeMetricFamily(name, help_, labels=["cell", "product"])
            for product, s in judged.items():
                v = s.get(key)
                if key == "warning":
                    v = float(v is not None)
                if v is not None:  # no reference, or not judged yet: no sample
                    g.add_metric([self.cell, product], float(v))
            yield g


class _CappedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``slots`` at once; the rest are closed on accept."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: a burst is accepted (and closed) quickly

    def __init__(self, address: tuple[str, int], handler: type, slots: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - socketserver API
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        max_connections: int = 16,
        timeout_s: float = 5.0,
    ) -> None:
        m = metrics

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # applied to the connection's socket

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = m.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        try:
            self.httpd = _CappedServer((host, port), Handler, max_connections)
        except OSError as exc:
            raise listen_error("metrics.port", f"{host}:{port}", exc) from None
        metrics.refused_fn = lambda: self.httpd.refused
        self.port = self.httpd.server_address[1]
        self._t = threading.Thread(
            target=self.httpd.serve_forever, name="afrd-metrics", daemon=True
        )

    def start(self) -> None:
        self._t.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
