"""Drift watch: per product and model, the scores of the last passed parts against the
calibration the model's threshold came from, so a lamp that ages or a lens that gets dirty is
seen before the false-reject rate doubles.

The reference is what bundle.json keeps of the calibration (``threshold.statistics.normal``,
afrd.runtime.threshold_stats: n, min, the deciles, p95, p99, max): quantiles, not the scores.
That decides the statistic: a two-sample KS test needs the calibration scores themselves,
while the **population stability index** (PSI) needs only the share of scores in each bin, and
the quantiles are bins with known shares. So, over the last ``window`` passed parts:

- bins: the calibration quantiles below the running threshold, the threshold the last edge
  (passed parts are at or below it); expected share of each = its calibration share among
  scores at or below the threshold (the CDF runs linearly through the quantiles, the maximum at
  n/(n+1): a new normal part exceeds the highest of n with probability 1/(n+1));
- ``psi`` = sum over bins of (observed - expected) x ln(observed / expected), the observed
  shares smoothed by half a part per bin (an empty bin is not infinite). Below 0.1 is usually
  read as stable, above 0.25 as shifted;
- ``frr_implied``: the false-reject rate the shift implies. The calibration puts ``a`` of its
  normal scores above a reference quantile (the highest below the threshold with at least a
  tenth of the passes above it) and ``c`` above the threshold. If the whole upper tail grows by
  a factor r, a share f = (a - c) r / (1 - c r) of the passes lies between the two, so
  r = f / (a - c + f c) and the false-reject rate is c r (``frr_factor`` = r).

A warning (in ``status`` and one line in the journal) when PSI >= ``[drift] warn_psi`` or the
implied rate reaches ``warn_frr_factor`` (< 2) times the calibrated one, once ``min_parts``
passes are in the window; it clears once both are back under ``CLEAR_AT`` of their levels, so
a measure hovering at a level does not fill the journal. A bundle without calibration
statistics (made before they were kept) is watched without a reference: "no reference" in
``status``, never an error. A window starts empty when a product's model changes (promote,
rollback, reload) or a reload brings other calibration statistics for the same model.

Every judged score also counts in a histogram per product and model, buckets at fixed
fractions of the threshold the watch began with (``afrd_score`` in Prometheus; the series are
written by afrd.daemon.interfaces.metrics, from ``DriftBook.series``).

``add`` (the output thread, after the part is published) is a deque append and a bucket
count; the statistic is computed when someone looks (the heartbeat, ``status``, a scrape).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import numpy as np

from afrd.config.lifecycle import DriftConfig
from afrd.runtime.loader import source_graph

log = logging.getLogger("afrd.daemon.drift")

# what afrd.runtime.threshold_stats.score_statistics keeps, as (key, calibration share below)
QUANTILES = (
    *((f"p{k}", k / 100) for k in (10, 20, 30, 40, 50, 60, 70, 80, 90)),
    ("p95", 0.95),
    ("p99", 0.99),
)
MIN_SHARE_ABOVE_REF = 0.1  # of the passes above the reference quantile of frr_implied
CLEAR_AT = 0.8  # a warning clears below this share of its level (PSI; the FRR factor's excess)
BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)  # x the threshold: afrd_score
MAX_WATCHES = 64  # (product, model) pairs kept: product labels stay bounded


def calibration_statistics(bundle_dir: str, product: str | None, graph: str) -> dict:
    """The threshold statistics of ``graph`` (model.onnx or a checked variant) for ``product``
    (its own threshold's in a multi-class bundle, else the bundle's), read from bundle.json;
    {} when there are none."""
    try:
        meta = json.loads((Path(bundle_dir) / "bundle.json").read_text(encoding="utf-8"))
        slot = meta if graph == "model.onnx" else meta["variants"][graph]
        own = ((slot.get("products") or {}).get(product) or {}).get("threshold") or {}
        rec = own if own.get("value") is not None else slot.get("threshold") or {}
        stats = rec.get("statistics")
        return stats if isinstance(stats, dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


class Reference:
    """A calibration's normal scores as a CDF through its quantiles (see the module doc)."""

    def __init__(self, points: list[tuple[float, float]], n: int) -> None:
        self.xs = np.array([p[0] for p in points], np.float64)
        self.ps = np.array([p[1] for p in points], np.float64)
        self.n = n

    @classmethod
    def from_statistics(cls, stats: dict) -> Reference | None:
        normal = stats.get("normal") if isinstance(stats, dict) else None
        if not isinstance(normal, dict) or not isinstance(normal.get("n"), int):
            return None
        n = normal["n"]
        if n < 10 or not all(isinstance(normal.get(k), (int, float)) for k in ("min", "max")):
            return None
        pts = [(float(normal["min"]), 1 / (n + 1))]
        pts += [
            (float(normal[k]), p) for k, p in QUANTILES if isinstance(normal.get(k), (int, float))
        ]
        pts.append((float(normal["max"]), n / (n + 1)))
        pts.sort()
        clean = [pts[0]]
        for x, p in pts[1:]:  # strictly increasing in both (ties: keep the higher share)
            if x > clean[-1][0] and p > clean[-1][1]:
                clean.append((x, p))
            elif x == clean[-1][0]:
                clean[-1] = (x, max(p, clean[-1][1]))
        return cls(clean, n) if len(clean) >= 3 else None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Reference)
            and self.n == other.n
            and np.array_equal(self.xs, other.xs)
            and np.array_equal(self.ps, other.ps)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays: not a dict key

    def cdf(self, x: float) -> float:
        if x < self.xs[0]:
            return 0.0
        return float(np.interp(x, self.xs, self.ps))


def judge_window(ref: Reference, threshold: float, scores: np.ndarray) -> dict:
    """PSI and the implied false-reject rate of the passed ``scores`` (the module doc)."""
    scores = scores[scores <= threshold]
    n = int(scores.size)
    f_thr = ref.cdf(threshold)
    c = 1.0 - f_thr
    out: dict[str, Any] = {"passed": n, "frr_calibrated": round(c, 6)}
    edges = [float(x) for x in ref.xs if x < threshold]
    if n == 0 or f_thr <= 0 or not edges:
        return {**out, "psi": None, "frr_implied": None, "frr_factor": None}
    counts = np.bincount(np.searchsorted(edges, scores, side="left"), minlength=len(edges) + 1)
    bounds = [0.0, *(ref.cdf(x) for x in edges), f_thr]
    expected = np.diff(bounds) / f_thr
    keep = expected > 0
    obs = (counts[keep] + 0.5) / (n + 0.5 * int(keep.sum()))
    exp = expected[keep]
    psi = float(np.sum((obs - exp) * np.log(obs / exp)))
    # the reference quantile: the highest edge with at least MIN_SHARE_ABOVE_REF of passes above
    above = [i for i, b in enumerate(bounds[1:-1]) if (f_thr - b) / f_thr >= MIN_SHARE_ABOVE_REF]
    ref_i = max(above, default=None)
    factor = None
    if ref_i is not None:
        a = 1.0 - bounds[1 + ref_i]
        f = float(counts[ref_i + 1 :].sum()) / n
        denom = a - c + f * c
        factor = f / denom if denom > 0 else None
    out.update(psi=round(psi, 6))
    out["frr_implied"] = None if factor is None else round(min(1.0, c * factor), 6)
    out["frr_factor"] = None if factor is None else round(factor, 4)
    return out


class DriftWatch:
    """One product's parts judged by one model: the window of passed scores and the histogram
    of every judged score."""

    def __init__(
        self, product: str, model: dict, threshold: float, ref: Reference | None, cfg: DriftConfig
    ) -> None:
        self.product, self.model, self.ref, self.cfg = product, dict(model), ref, cfg
        self.threshold = threshold
        self.scores: deque[float] = deque(maxlen=cfg.window)
        self.edges = [threshold * k for k in BUCKETS]
        self.buckets = [0] * (len(self.edges) + 1)
        self.sum = 0.0
        self.warning: str | None = None
        self.stale = False  # a reload happened: read the reference again at the next part

    def restart(self, cfg: DriftConfig | None = None) -> None:
        """A new window (the histogram counts on: Prometheus sees no reset)."""
        self.cfg = cfg or self.cfg
        self.scores = deque(maxlen=self.cfg.window)
        self.warning = None

    def add(self, score: float, threshold: float, passed: bool) -> None:
        self.threshold = threshold
        self.buckets[bisect.bisect_left(self.edges, score)] += 1
        self.sum += score
        if passed:
            self.scores.append(score)

    def judge(self) -> dict:
        """The watch's section of ``status`` (``warning`` set once it is over a level)."""
        out: dict[str, Any] = {
            "model": dict(self.model),
            "statistic": "psi",
            "window": self.cfg.window,
            "passed": len(self.scores),
        }
        if self.ref is None:
            out.update(psi=None, frr_calibrated=None, frr_implied=None, frr_factor=None)
            out["note"] = (
                "no reference: the bundle keeps no calibration statistics for this model "
                "(afrd calibrate threshold stores them)"
            )
        else:
            out.update(judge_window(self.ref, self.threshold, np.fromiter(self.scores, float)))
        out["warning"] = self._warn(out)
        return out

    def _warn(self, s: dict) -> str | None:
        c = self.cfg
        psi, factor = s.get("psi"), s.get("frr_factor")
        judged = s["passed"] >= c.min_parts and psi is not None
        over = []
        if judged and psi >= c.warn_psi:
            over.append(f"PSI {psi:.3f} >= {c.warn_psi:g}")
        if judged and factor is not None and factor >= c.warn_frr_factor:
            over.append(
                f"implied false-reject rate {s['frr_implied']:.3g} = {factor:.2f} x "
                f"the calibrated {s['frr_calibrated']:.3g} (>= {c.warn_frr_factor:g} x)"
            )
        name = f"product {self.product!r} model {self.model.get('name')}"
        if over:
            text = (
                f"scores of passed parts drifted from the calibration ({'; '.join(over)}, over "
                f"the last {s['passed']}): check lighting and optics, or recalibrate"
            )
            if self.warning is None:  # the journal's one line for this episode
                log.warning("drift: %s: %s", name, text)
            self.warning = text
        elif self.warning is not None and not (judged and self._near(psi, factor)):
            log.info("drift: %s: scores back within the calibration's limits", name)
            self.warning = None
        return self.warning  # between CLEAR_AT and a level: the warning raised stays up

    def _near(self, psi: float, factor: float | None) -> bool:
        """Still within CLEAR_AT of a level (a warning raised stays up)."""
        c = self.cfg
        if psi >= CLEAR_AT * c.warn_psi:
            return True
        return factor is not None and factor - 1 >= CLEAR_AT * (c.warn_frr_factor - 1)


class DriftBook:
    """Every (product, model) watch of the running daemon; ``add`` per judged part,
    ``section()`` for ``status``, ``series()`` for the metrics."""

    def __init__(self, cell: str, cfg: DriftConfig) -> None:
        self.cell, self.cfg = cell, cfg
        self._watches: OrderedDict[tuple[str, str], DriftWatch] = OrderedDict()
        self._current: dict[str, DriftWatch] = {}  # product -> the model of its last part
        self._refs: dict[tuple[str, str | None, str], Reference | None] = {}
        self._lock = threading.Lock()

    def configure(self, cfg: DriftConfig) -> None:
        """A reload: its [drift] (other levels or window: every window starts again), and
        bundle.json read again at each watch's next part (a recalibrated threshold brings
        other statistics: that watch starts again too)."""
        with self._lock:
            self._refs.clear()
            changed, self.cfg = cfg != self.cfg, cfg
            for w in self._watches.values():
                w.stale = True
                if changed:
                    w.restart(cfg)

    def add(self, product: str, recipe: Any, score: float, threshold: float) -> None:
        """One judged part (pass or fail) of ``recipe`` (afrd.daemon.recipes.Recipe)."""
        if not self.cfg.enabled:
            return
        key = (product, recipe.model["sha256"])
        with self._lock:
            w = self._watches.get(key)
            if w is None:
                w = self._watches[key] = DriftWatch(
                    product, recipe.model, threshold, self._ref(recipe), self.cfg
                )
                while len(self._watches) > MAX_WATCHES:
                    self._watches.popitem(last=False)
            else:
                self._watches.move_to_end(key)
                if w.stale:
                    w.stale = False
                    ref = self._ref(recipe)
                    if ref != w.ref:
                        w.ref = ref
                        w.restart()
                if self._current.get(product) not in (w, None):
                    w.restart()  # back to a model judged before (rollback): a new window
            self._current[product] = w
            w.add(score, threshold, score <= threshold)

    def _ref(self, recipe: Any) -> Reference | None:
        graph = source_graph(recipe.runtime.engine)  # model.onnx, or the variant it runs
        rkey = (recipe.bundle, recipe.name, graph)
        if rkey not in self._refs:  # bundle.json read once per model, on its first part
            stats = calibration_statistics(recipe.bundle, recipe.name, graph)
            self._refs[rkey] = Reference.from_statistics(stats)
        return self._refs[rkey]

    def section(self) -> dict[str, dict]:
        """``status``'s ``drift``: product -> the watch of the model now judging it."""
        with self._lock:
            return {p: w.judge() for p, w in sorted(self._current.items())}

    def series(self) -> tuple[list[dict], dict[str, dict]]:
        """For the metrics: every watch's histogram (product, model, edges, cumulative
        counts with +Inf last, sum) and ``section()``."""
        with self._lock:
            judged = {p: w.judge() for p, w in sorted(self._current.items())}
            hists = [
                {
                    "product": w.product,
                    "model": w.model,
                    "edges": list(w.edges),
                    "cumulative": list(itertools.accumulate(w.buckets)),
                    "sum": w.sum,
                }
                for w in self._watches.values()
            ]
        return hists, judged
