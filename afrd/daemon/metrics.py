"""Prometheus text-format metrics over plain HTTP (stdlib only): GET /metrics.

afrd_parts_total{verdict}, afrd_errors_total{code}, afrd_stage_seconds{stage} histograms
(acquire, infer, publish, overhead, total), afrd_queue_depth{queue}, afrd_paused, afrd_up.

The port is unauthenticated, so it must not be a way to starve the daemon: at most
``max_connections`` are served at once (more are closed on accept, counted in
``afrd_metrics_refused_total``), each socket read/write times out after ``timeout_s``, and a
connection serves one request (HTTP/1.0). Bind it to loopback unless a scraper elsewhere needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("acquire", "infer", "publish", "overhead", "total")


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.count += 1
        self.sum += v
        for i, b in enumerate(BUCKETS):
            if v <= b:
                self.counts[i] += 1


class Metrics:
    """Thread-safe counters; ``render()`` gives the exposition text."""

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self._lock = threading.Lock()
        self.parts = {"pass": 0, "fail": 0, "error": 0}
        self.errors: dict[str, int] = {}
        self.hist = {s: _Histogram() for s in STAGES}
        self.queue_fn: Callable[[], dict[str, int]] = dict
        self.gauges_fn: Callable[[], dict[str, float]] = dict
        self.refused_fn: Callable[[], int] = int  # metrics connections closed over the cap

    def part(self, verdict: str, code: str | None = None) -> None:
        with self._lock:
            self.parts[verdict] = self.parts.get(verdict, 0) + 1
            if code:
                self.errors[code] = self.errors.get(code, 0) + 1

    def observe(self, stage: str, seconds: float | None) -> None:
        if seconds is None or seconds != seconds:
            return
        with self._lock:
            self.hist[stage].observe(seconds)

    def render(self) -> str:
        c = f'cell="{self.cell}"'
        out = [
            "# HELP afrd_up 1 while the daemon runs",
            "# TYPE afrd_up gauge",
            f"afrd_up{{{c}}} 1",
        ]
        with self._lock:
            out += [
                "# HELP afrd_parts_total Parts inspected by verdict",
                "# TYPE afrd_parts_total counter",
            ]
            out += [f'afrd_parts_total{{{c},verdict="{v}"}} {n}' for v, n in self.parts.items()]
            out += [
                "# HELP afrd_errors_total Error verdicts by reason",
                "# TYPE afrd_errors_total counter",
            ]
            out += [
                f'afrd_errors_total{{{c},code="{k}"}} {n}' for k, n in sorted(self.errors.items())
            ]
            out += [
                "# HELP afrd_stage_seconds Per-part time per pipeline stage",
                "# TYPE afrd_stage_seconds histogram",
            ]
            for stage, h in self.hist.items():
                lab = f'{c},stage="{stage}"'
                out += [
                    f'afrd_stage_seconds_bucket{{{lab},le="{b}"}} {n}'
                    for b, n in zip(BUCKETS, h.counts, strict=True)
                ]
                out.append(f'afrd_stage_seconds_bucket{{{lab},le="+Inf"}} {h.count}')
                out.append(f"afrd_stage_seconds_sum{{{lab}}} {h.sum:.6f}")
                out.append(f"afrd_stage_seconds_count{{{lab}}} {h.count}")
        out += [
            "# HELP afrd_queue_depth Items waiting in each pipeline queue",
            "# TYPE afrd_queue_depth gauge",
        ]
        out += [f'afrd_queue_depth{{{c},queue="{q}"}} {n}' for q, n in self.queue_fn().items()]
        for name, v in self.gauges_fn().items():
            out += [f"# TYPE afrd_{name} gauge", f"afrd_{name}{{{c}}} {v}"]
        out += ["# TYPE afrd_metrics_refused_total counter"]
        out += [f"afrd_metrics_refused_total{{{c}}} {self.refused_fn()}"]
        return "\n".join(out) + "\n"


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
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = _CappedServer((host, port), Handler, max_connections)
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
