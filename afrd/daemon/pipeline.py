"""The inspection pipeline: trigger -> acquire -> infer -> verdict -> publish/record.

Three threads joined by bounded queues, so acquisition of part k+1 overlaps inference of part k
and publishing never waits on either::

    trigger() --[triggers]--> acquire thread --[acquired]--> infer thread --[results]--> output

No part is dropped silently: a trigger that finds the trigger queue full (overrun), an
acquisition fault, an engine exception or a non-finite score each become a result with verdict
``error`` and a reason, published like any other; the threads keep running. ``stop()`` refuses
new triggers, publishes queued-but-not-started triggers as ``error``/``shutdown``, and lets the
part in flight finish and be published.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from afrd.daemon.schema import HEATMAP_SCHEMA, RESULT_SCHEMA, utc_iso
from afrd.errors import AfrdError

log = logging.getLogger("afrd.daemon.pipeline")

_STOP = object()


@dataclass
class Runtime:
    """What inference needs; swapped as a whole on reload."""

    engine: Any  # afrd.runtime.engines.base.Engine
    threshold: float
    model_name: str
    model_sha256: str
    lights: tuple[str, ...]


@dataclass
class Job:
    seq: int
    part_id: str
    product: str
    t_trigger: float  # perf_counter at trigger
    wall_trigger: float  # time.time() at trigger
    imageset: Any = None
    t_acquire: float | None = None  # seconds spent acquiring
    t_infer: float | None = None  # seconds the engine took
    score: float | None = None
    amap: np.ndarray | None = None
    threshold: float | None = None
    model: dict = field(default_factory=lambda: {"name": "", "sha256": ""})
    error: tuple[str, str] | None = None  # (code, message)
    verdict: str = "error"
    t_published: float | None = None
    stamps: dict = field(default_factory=dict)  # perf_counter per pipeline event (diagnostics)
    started: bool = False  # reached the acquire stage (counts as in flight until published)


class Pipeline:
    """``acquire(part_id, product) -> ImageSet``; ``sink(job, result_msg)`` publishes/records."""

    def __init__(
        self,
        cell: str,
        acquire: Callable[[str, str], Any],
        runtime: Runtime,
        sink: Callable[[Job, dict], None],
        triggers: int = 16,
        acquired: int = 2,
        results: int = 16,
    ) -> None:
        self.cell = cell
        self._acquire = acquire
        self._runtime = runtime
        self._rt_lock = threading.Lock()
        self._sink = sink
        self.q_trig: queue.Queue = queue.Queue(maxsize=triggers)
        self.q_acq: queue.Queue = queue.Queue(maxsize=acquired)
        self.q_out: queue.Queue = queue.Queue(maxsize=results)
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._closing = False
        self.paused = False
        self.in_flight = 0
        self.acquiring = False  # the acquire thread is imaging a part right now
        self.skip_error: Callable[[BaseException], bool] | None = None  # hardware-trigger mode
        self._threads = [
            threading.Thread(target=self._acquire_loop, name="afrd-acquire", daemon=True),
            threading.Thread(target=self._infer_loop, name="afrd-infer", daemon=True),
            threading.Thread(target=self._output_loop, name="afrd-output", daemon=True),
        ]
        self.last_beat = {t.name: time.monotonic() for t in self._threads}

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        for t in self._threads:
            t.start()

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def swap_runtime(self, runtime: Runtime) -> Runtime:
        """Install a new engine/threshold between two inferences; returns the old runtime."""
        with self._rt_lock:
            old, self._runtime = self._runtime, runtime
        return old

    def set_threshold(self, value: float) -> None:
        with self._rt_lock:
            self._runtime.threshold = float(value)

    def queue_depths(self) -> dict[str, int]:
        return {
            "triggers": self.q_trig.qsize(),
            "acquired": self.q_acq.qsize(),
            "results": self.q_out.qsize(),
        }

    def healthy(self, max_age_s: float = 30.0) -> bool:
        """All three threads alive and each looped within ``max_age_s`` (watchdog)."""
        now = time.monotonic()
        return all(t.is_alive() for t in self._threads) and all(
            now - b < max_age_s for b in self.last_beat.values()
        )

    def _next_seq(self) -> int:
        with self._seq_lock:
            s = self._seq
            self._seq += 1
            return s

    def trigger(self, part_id: str | None = None, product: str = "default") -> Job:
        """Queue one part. Never blocks: a full queue, a pause or a shutdown makes the part an
        ``error`` result (published) and the returned job carries ``error``."""
        seq = self._next_seq()
        job = Job(
            seq=seq,
            part_id=part_id if part_id else f"{self.cell}-{seq:08d}",
            product=product,
            t_trigger=time.perf_counter(),
            wall_trigger=time.time(),
        )
        if self._closing:
            job.error = ("shutdown", "daemon is stopping; part not inspected")
        elif self.paused:
            job.error = ("paused", "inspection is paused; part not inspected")
        else:
            try:
                self.q_trig.put_nowait(job)
                return job
            except queue.Full:
                job.error = (
                    "overrun",
                    f"trigger queue full ({self.q_trig.maxsize} parts waiting): triggers come "
                    f"faster than the cell inspects",
                )
        self._emit(job)
        return job

    def _emit(self, job: Job) -> None:
        """Hand a finished (or failed) job to the output thread; backpressure, never a drop."""
        while True:
            try:
                self.q_out.put(job, timeout=5.0)
                return
            except queue.Full:
                log.error("output queue full for 5 s (publisher stuck?); still waiting")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the part in flight, publish queued triggers as errors, join the threads."""
        self._closing = True
        while True:
            try:
                job = self.q_trig.get_nowait()
            except queue.Empty:
                break
            job.error = ("shutdown", "daemon stopped before this part was imaged")
            self._emit(job)
        self.q_trig.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))

    # ------------------------------------------------------------------ stages
    def _acquire_loop(self) -> None:
        name = "afrd-acquire"
        while True:
            self.last_beat[name] = time.monotonic()
            try:
                job = self.q_trig.get(timeout=1.0)
            except queue.Empty:
                continue
            if job is _STOP:
                self.q_acq.put(_STOP)
                return
            job.started = True
            with self._seq_lock:
                self.in_flight += 1
            t0 = job.stamps["acquire_start"] = time.perf_counter()
            self.acquiring = True
            try:
                job.imageset = self._acquire(job.part_id, job.product)
            except Exception as exc:
                self.acquiring = False
                if self.skip_error is not None and self.skip_error(exc):
                    with self._seq_lock:
                        self.in_flight -= 1
                    continue
                job.error = ("acquire", _describe(exc))
                log.warning("part %s: acquisition failed: %s", job.part_id, job.error[1])
            self.acquiring = False
            job.t_acquire = time.perf_counter() - t0
            job.stamps["acquire_end"] = t0 + job.t_acquire
            self.q_acq.put(job)  # blocks when inference is behind: that is the backpressure

    def _infer_loop(self) -> None:
        name = "afrd-infer"
        while True:
            self.last_beat[name] = time.monotonic()
            try:
                job = self.q_acq.get(timeout=1.0)
            except queue.Empty:
                continue
            if job is _STOP:
                self.q_out.put(_STOP)
                return
            job.stamps["infer_dequeued"] = time.perf_counter()
            if job.error is None:
                self._infer(job)
            job.stamps["infer_end"] = time.perf_counter()
            self._emit(job)

    def _infer(self, job: Job) -> None:
        with self._rt_lock:
            rt = self._runtime
            job.threshold = rt.threshold
            job.model = {"name": rt.model_name, "sha256": rt.model_sha256}
            t0 = time.perf_counter()
            try:
                maps, scores = rt.engine.infer(job.imageset.images)
                score = float(np.asarray(scores).reshape(-1)[0])
            except Exception as exc:
                job.t_infer = time.perf_counter() - t0
                job.error = ("infer", _describe(exc))
                log.warning("part %s: inference failed: %s", job.part_id, job.error[1])
                return
            job.t_infer = time.perf_counter() - t0
        if not math.isfinite(score):
            job.error = ("nan_score", f"engine {rt.engine.name} returned score {score}")
            return
        job.score = score
        job.amap = np.asarray(maps)[0]
        job.verdict = "fail" if score > job.threshold else "pass"

    def _output_loop(self) -> None:
        name = "afrd-output"
        while True:
            self.last_beat[name] = time.monotonic()
            try:
                job = self.q_out.get(timeout=1.0)
            except queue.Empty:
                continue
            if job is _STOP:
                return
            if job.error is not None:
                job.verdict = "error"
                if job.threshold is None:
                    rt = self._runtime
                    job.threshold = rt.threshold
                    job.model = {"name": rt.model_name, "sha256": rt.model_sha256}
            job.t_published = job.stamps["output_dequeued"] = time.perf_counter()
            msg = self.result_message(job)
            try:
                self._sink(job, msg)
            except Exception:
                log.exception("publishing part %s failed", job.part_id)
            if job.started:
                with self._seq_lock:
                    self.in_flight -= 1

    # ------------------------------------------------------------------ messages
    def result_message(self, job: Job) -> dict:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1e3, 3)

        total = None if job.t_published is None else job.t_published - job.t_trigger
        msg: dict = {
            "schema": RESULT_SCHEMA,
            "cell": self.cell,
            "part_id": job.part_id,
            "product": job.product,
            "seq": job.seq,
            "timestamp": utc_iso(job.wall_trigger),
            "verdict": job.verdict,
            "score": job.score,
            "threshold": job.threshold,
            "latency_ms": {
                "acquire": ms(job.t_acquire),
                "infer": ms(job.t_infer),
                "total": ms(total),
            },
            "model": dict(job.model),
        }
        if job.verdict == "error":
            code, message = job.error or ("internal", "unknown error")
            msg["error"] = {"code": code, "message": message}
        return msg

    def heatmap_message(self, job: Job) -> tuple[dict, bytes] | None:
        """The overlay PNG (anomaly map coloured over the diffuse view) and its JSON."""
        if job.amap is None or job.imageset is None:
            return None
        png, h, w = overlay_png(job.imageset, job.amap, job.threshold or 0.0)
        msg = {
            "schema": HEATMAP_SCHEMA,
            "cell": self.cell,
            "part_id": job.part_id,
            "product": job.product,
            "seq": job.seq,
            "timestamp": utc_iso(job.wall_trigger),
            "verdict": job.verdict,
            "score": job.score,
            "threshold": job.threshold,
            "map_max": float(np.max(job.amap)) if np.all(np.isfinite(job.amap)) else None,
            "width": w,
            "height": h,
            "format": "png",
            "content": "overlay: jet colour map of the anomaly map (blue = baseline, red = at/above threshold) over the diffuse view",
        }
        return msg, png


def view_image(imageset: Any) -> np.ndarray:
    """The image a person looks at: the diffuse 'box' light when present, else the first."""
    lights = tuple(imageset.lights)
    i = lights.index("box") if "box" in lights else 0
    return imageset.images[i]


def overlay_png(imageset: Any, amap: np.ndarray, threshold: float) -> tuple[bytes, int, int]:
    import cv2

    img = view_image(imageset)
    h, w = img.shape[:2]
    m = np.nan_to_num(np.asarray(amap, dtype=np.float32))
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    # blue = the part's own baseline (5th percentile of its map), red = at or above threshold:
    # a red region is what makes the part fail
    lo = float(np.percentile(m, 5))
    hi = threshold if threshold > lo else max(float(m.max()), lo + 1e-6)
    m8 = np.clip((m - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    colour = cv2.applyColorMap(m8, cv2.COLORMAP_JET)  # BGR
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    out = cv2.addWeighted(bgr, 0.55, colour, 0.45, 0.0)
    ok, buf = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise AfrdError("could not encode heatmap PNG")
    return buf.tobytes(), h, w


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AfrdError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
