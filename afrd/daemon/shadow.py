"""Shadow run: a candidate bundle judges the parts of one product beside the live model, after
the live verdict is out, and never in its way.

The output thread, once a part's result is published, offers the part's image set to the run
(``offer``: a ``put_nowait`` on a small bounded queue, ``[models] shadow_queue``); when the queue
is full the part is skipped and counted, so a slow candidate costs the line nothing but
comparisons. The candidate's engine runs in a process of its own at the lowest CPU priority
(``afrd.runtime.isolated``: it shares no interpreter lock with the live path and gets only the
CPU time the live path leaves; BENCHMARKS.md "Shadow run's cost"). The run's own thread
(``afrd-shadow``, idle-class too) sends it each part, judges the score by the candidate's
threshold and publishes ``shadow.<cell>`` (``afrd.shadow/1``: the candidate's verdict, score,
threshold and model beside the live ones). A part the recorder
chose (``Recorder.wants``, decided on the output thread) is recorded from here, after the
candidate judged it, with ``meta.shadow`` {run, model, verdict, score, threshold} in its
set.json; a skipped part, or one still queued when the run stops, is recorded as usual, without
it.

``report()`` is what ``afrd ctl shadow status`` prints: parts compared, verdict agreement, the
last disagreements with their capture ids, the Pearson correlation of the two scores, and on
the parts reviewed since the run began (set.json ``label``, set in the page's review or with
`afrd label`) each model's false rejects and misses.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from afrd.daemon.verdict import describe, utc_iso
from afrd.runtime.isolated import IsolatedRuntime, lowest_priority

log = logging.getLogger("afrd.daemon.shadow")

SHADOW_SCHEMA = "afrd.shadow/1"
DISAGREEMENTS_KEPT = 100  # the last ones, in the report
CAPTURES_KEPT = 5000  # recorded parts the label statistics read (set.json each)

Record = Callable[[Any, dict, Callable[[Path], None] | None], bool]  # Recorder.put


class ShadowRun:
    """One candidate beside the live model for ``product`` (how status names the recipe)."""

    def __init__(
        self,
        cell: str,
        product: str,
        runtime: IsolatedRuntime,
        threshold: float,
        bundle: str,
        publish: Callable[[dict], Any],
        recipe: str | None = None,
        queue_size: int = 4,
        record: Record | None = None,
        recorder_root: Path | None = None,
    ) -> None:
        self.cell, self.product, self.runtime = cell, product, runtime
        self.recipe = recipe  # the recipe whose parts it judges (None: the cell's one)
        self.threshold, self.bundle = float(threshold), bundle
        self.since = utc_iso(time.time())  # the run's id in set.json's meta.shadow.run
        self._publish, self._record, self._root = publish, record, recorder_root
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self.offered = self.compared = self.agreed = self.skipped = self.errors = 0
        self.disagreements: deque[dict] = deque(maxlen=DISAGREEMENTS_KEPT)
        self.captures: deque[Path] = deque(maxlen=CAPTURES_KEPT)
        self._co = _CoMoments()
        self._stop = threading.Event()
        self._ended = False  # the candidate's process ended on its own (logged)
        self._thread = threading.Thread(target=self._loop, name="afrd-shadow", daemon=True)
        self._thread.start()

    @property
    def model(self) -> dict[str, str]:
        return self.runtime.model

    def offer(self, job: Any, msg: dict, record: bool) -> bool:
        """The output thread, after publishing ``msg``: hand the part over, or skip it (count)
        when the candidate is busy. Never blocks."""
        self.offered += 1
        try:
            self._q.put_nowait((job.imageset, msg, record))
            return True
        except queue.Full:
            self.skipped += 1
            return False

    def healthy(self) -> bool:
        return self._thread.is_alive() or self._stop.is_set()

    def stop(self) -> None:
        """End the run and the candidate's process: the part in its engine and those still
        queued are not judged (the recorder's still recorded)."""
        self._stop.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        self.runtime.close()  # a part in the candidate's engine is not waited for
        self._thread.join(timeout=30)
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._record_plain(*item)

    def _record_plain(self, imageset: Any, live: dict, record: bool) -> None:
        """A part the recorder chose that the candidate did not judge: recorded as usual."""
        if record and self._record is not None:
            self._record(imageset, live, None)

    # ------------------------------------------------------------------ the run's thread
    def _loop(self) -> None:
        lowest_priority()
        while not self._stop.is_set():
            item = self._q.get()
            if item is None:
                break
            try:
                self._judge(*item)
            except Exception:  # a bug must not end the run silently: counted and logged
                self.errors += 1
                log.exception("shadow: part %s not compared", item[1].get("seq"))
                self._record_plain(*item)

    def _judge(self, imageset: Any, live: dict, record: bool) -> None:
        rt = self.runtime
        images = _reorder(imageset, rt.lights)
        t0 = time.perf_counter()
        verdict, score, error = "error", None, None
        try:
            _maps, scores = rt.engine.infer(images)
            s = np.asarray(scores, dtype=np.float64).reshape(-1)
            if s.size != 1 or not math.isfinite(float(s[0])):
                raise ValueError(f"engine {rt.engine.name} returned scores {s.tolist()[:4]}")
            score = float(s[0])
            verdict = "fail" if score > self.threshold else "pass"
        except Exception as exc:
            if self._stop.is_set():  # stopped under it: not a candidate's error
                self._record_plain(imageset, live, record)
                return
            error = {"code": "infer", "message": describe(exc)}
            if not rt.alive() and not self._ended:
                self._ended = True  # once: each part from now on is an error, the live go on
                log.warning("shadow: %s; stop the run (afrd ctl shadow stop)", error["message"])
        msg = self._message(live, verdict, score, error, time.perf_counter() - t0)
        self._count(live, msg)
        try:
            self._publish(msg)
        except Exception:
            log.exception("shadow: result of part %s not published", live.get("seq"))
        if record and self._record is not None:
            meta = {k: msg[k] for k in ("verdict", "score", "threshold", "model")}
            result = {**live, "meta": {"shadow": {"run": self.since, **meta}}}
            self._record(imageset, result, self._written(msg))

    def _message(self, live: dict, verdict: str, score, error, infer_s: float) -> dict:
        msg = {
            "schema": SHADOW_SCHEMA,
            "cell": self.cell,
            "part_id": live["part_id"],
            "product": live["product"],
            "seq": live["seq"],
            "timestamp": live["timestamp"],
            "verdict": verdict,
            "score": score,
            "threshold": self.threshold,
            "latency_ms": {"infer": round(infer_s * 1e3, 3)},
            "model": dict(self.model),
            "live": {k: live[k] for k in ("verdict", "score", "threshold", "model")},
            "agree": verdict == live["verdict"],
        }
        if error is not None:
            msg["error"] = error
        return msg

    def _count(self, live: dict, msg: dict) -> None:
        with self._lock:
            if msg["verdict"] == "error":
                self.errors += 1
                return
            self.compared += 1
            self._co.add(float(live["score"]), float(msg["score"]))
            if msg["agree"]:
                self.agreed += 1
                return
            self.disagreements.append(
                {
                    "seq": live["seq"],
                    "part_id": live["part_id"],
                    "capture": None,  # filled in once the recorder wrote the part
                    "live": {"verdict": live["verdict"], "score": live["score"]},
                    "candidate": {"verdict": msg["verdict"], "score": msg["score"]},
                }
            )

    def _written(self, msg: dict) -> Callable[[Path], None]:
        entry = self.disagreements[-1] if not msg["agree"] and self.disagreements else None

        def done(folder: Path) -> None:  # the recorder's thread
            self.captures.append(folder)
            if entry is not None and self._root is not None:
                entry["capture"] = folder.relative_to(self._root).as_posix()

        return done

    # ------------------------------------------------------------------ the report
    def summary(self) -> dict:
        """The run's counts (``status``'s ``shadow`` section; no files read)."""
        with self._lock:
            n, agreed = self.compared, self.agreed
            return {
                "active": not self._stop.is_set(),
                "product": self.product,
                "model": dict(self.model),
                "threshold": self.threshold,
                "bundle": self.bundle,
                "since": self.since,
                "process": {"pid": self.runtime.pid, "running": self.runtime.alive()},
                "offered": self.offered,
                "compared": n,
                "skipped": self.skipped,
                "errors": self.errors,
                "pending": self.offered - n - self.skipped - self.errors,
                "agreement": round(agreed / n, 6) if n else None,
                "correlation": self._co.pearson(),
            }

    def report(self) -> dict:
        """``summary`` plus the disagreements and the reviewed parts' errors of each model."""
        with self._lock:
            disagreements = [dict(d) for d in self.disagreements]
            captures = list(self.captures)
        return {**self.summary(), "disagreements": disagreements, "labelled": _labelled(captures)}


def _reorder(imageset: Any, lights: tuple[str, ...]) -> np.ndarray:
    """The part's images in the candidate's light order (it may name them in another)."""
    have = tuple(imageset.lights)
    if have == tuple(lights):
        return imageset.images
    return imageset.images[[have.index(n) for n in lights]]


def _labelled(captures: list[Path]) -> dict:
    """Each model's false rejects (labelled good, failed) and misses (labelled defective,
    passed) on the recorded parts of this run an operator reviewed."""
    out = {"parts": 0, "good": 0, "defective": 0}
    errs = {m: {"false_rejects": 0, "misses": 0} for m in ("live", "candidate")}
    for folder in captures:
        try:
            doc = json.loads((folder / "set.json").read_text(encoding="utf-8"))
            label, live = doc.get("label"), doc.get("verdict")
            cand = doc["meta"]["shadow"]["verdict"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # gone (retention) or not readable: not counted
        if label not in (0, 1):
            continue
        out["parts"] += 1
        out["defective" if label == 1 else "good"] += 1
        for m, verdict in (("live", live), ("candidate", cand)):
            if label == 0 and verdict == "fail":
                errs[m]["false_rejects"] += 1
            elif label == 1 and verdict == "pass":
                errs[m]["misses"] += 1
    for e in errs.values():
        e["false_reject_rate"] = round(e["false_rejects"] / out["good"], 6) if out["good"] else None
        e["miss_rate"] = round(e["misses"] / out["defective"], 6) if out["defective"] else None
    return {**out, **errs}


class _CoMoments:
    """Running means and co-moments (Welford), for the scores' Pearson correlation."""

    def __init__(self) -> None:
        self.n, self.mx, self.my, self.sxx, self.syy, self.sxy = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    def add(self, x: float, y: float) -> None:
        self.n += 1
        dx, dy = x - self.mx, y - self.my
        self.mx += dx / self.n
        self.my += dy / self.n
        self.sxx += dx * (x - self.mx)
        self.syy += dy * (y - self.my)
        self.sxy += dx * (y - self.my)

    def pearson(self) -> float | None:
        if self.n < 3 or self.sxx <= 0 or self.syy <= 0:
            return None
        return round(self.sxy / math.sqrt(self.sxx * self.syy), 6)
