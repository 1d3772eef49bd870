"""Cost of the daemon's Prometheus metrics per part: prometheus_client (afrd.daemon.interfaces.metrics)
against the hand-written exporter it replaced (reproduced below as the baseline), same run.

Per part the daemon counts the verdict and observes five stage histograms (acquire, infer,
total, overhead, publish) on its output thread, so that is what is timed; a scrape renders the
whole exposition once, timed separately after as many parts.

    .venv/bin/python bench/metrics.py [--parts N] [--repeats R]   -> table + bench/out/metrics.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path

from afrd.daemon.interfaces.metrics import BUCKETS, STAGES, Metrics

PER_PART = ("acquire", "infer", "total", "overhead", "publish")


class HandWritten:
    """The exporter afrd shipped before prometheus_client (counters, histograms, text)."""

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self._lock = threading.Lock()
        self.parts = {"pass": 0, "fail": 0, "error": 0}
        self.errors: dict[str, int] = {}
        self.hist = {s: [[0] * len(BUCKETS), 0, 0.0] for s in STAGES}

    def part(self, verdict: str, code: str | None = None) -> None:
        with self._lock:
            self.parts[verdict] = self.parts.get(verdict, 0) + 1
            if code:
                self.errors[code] = self.errors.get(code, 0) + 1

    def observe(self, stage: str, seconds: float | None) -> None:
        if seconds is None or seconds != seconds:
            return
        with self._lock:
            h = self.hist[stage]
            h[1] += 1
            h[2] += seconds
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[0][i] += 1

    def render(self) -> str:
        c = f'cell="{self.cell}"'
        out = ["# TYPE afrd_parts_total counter"]
        with self._lock:
            out += [f'afrd_parts_total{{{c},verdict="{v}"}} {n}' for v, n in self.parts.items()]
            out += [f'afrd_errors_total{{{c},code="{k}"}} {n}' for k, n in self.errors.items()]
            for stage, (counts, count, total) in self.hist.items():
                lab = f'{c},stage="{stage}"'
                out += [
                    f'afrd_stage_seconds_bucket{{{lab},le="{b}"}} {n}'
                    for b, n in zip(BUCKETS, counts, strict=True)
                ]
                out.append(f'afrd_stage_seconds_bucket{{{lab},le="+Inf"}} {count}')
                out.append(f"afrd_stage_seconds_sum{{{lab}}} {total:.6f}")
                out.append(f"afrd_stage_seconds_count{{{lab}}} {count}")
        return "\n".join(out) + "\n"


def per_part_us(make, parts: int) -> float:
    m = make("bench")
    values = [0.0004 * (1 + i % 50) for i in range(parts)]  # spread over the buckets
    t0 = time.perf_counter()
    for i, v in enumerate(values):
        m.part("pass" if i % 10 else "error", None if i % 10 else "acquire")
        for stage in PER_PART:
            m.observe(stage, v)
    return (time.perf_counter() - t0) / parts * 1e6


def render_ms(make, parts: int) -> float:
    m = make("bench")
    for i in range(parts):
        m.part("pass")
        for stage in PER_PART:
            m.observe(stage, 0.0004 * (1 + i % 50))
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        m.render()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "metrics.json")
    a = ap.parse_args()
    makers = {"hand-written (baseline)": HandWritten, "prometheus_client": Metrics}
    us: dict[str, list[float]] = {name: [] for name in makers}
    ms: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(a.repeats):  # interleaved, so a busy spell on a shared box hits both
        for name, make in makers.items():
            us[name].append(per_part_us(make, a.parts))
            ms[name].append(render_ms(make, a.parts))
    # the minimum is the least disturbed estimate of each one's own cost on a loaded machine
    rows = {
        name: {
            "per_part_us_min": min(us[name]),
            "per_part_us_median": statistics.median(us[name]),
            "render_ms_min": min(ms[name]),
        }
        for name in makers
    }
    base = rows["hand-written (baseline)"]
    for r in rows.values():
        r["per_part_ratio"] = r["per_part_us_min"] / base["per_part_us_min"]
        r["render_ratio"] = r["render_ms_min"] / base["render_ms_min"]
    head = f"{'exporter':<24} {'us/part min':>11} {'median':>7} {'x base':>7} {'render ms':>10}"
    print(head + f" {'x base':>7}")
    for name, r in rows.items():
        print(
            f"{name:<24} {r['per_part_us_min']:>11.2f} {r['per_part_us_median']:>7.2f} "
            f"{r['per_part_ratio']:>7.2f} {r['render_ms_min']:>10.3f} {r['render_ratio']:>7.2f}"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "bench": "metrics",
                "parts": a.parts,
                "repeats": a.repeats,
                "stages_per_part": list(PER_PART),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
