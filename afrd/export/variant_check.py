"""A precision variant checked against model.onnx on held-out image sets, and its own threshold.

fp16 and INT8 graphs compute approximately what ``model.onnx`` computes: close for fp16, and
for INT8 anywhere from close to useless (MinMax ranges on a memory bank's distances: score
correlation 0.07 with fp32 at 64 px). So every variant ``afrd-export`` writes is run beside
``model.onnx`` in ONNX Runtime on the same held-out image sets, and kept only when

- its scores stay within ``score`` standard deviations of model.onnx's normal scores
  (a verdict can then flip only for parts that close to the threshold),
- its maps stay within ``map`` of the range of model.onnx's maps (the operator's heatmap),
- and the two judge at least ``agreement`` of the sets alike, each at its own threshold.

Its threshold comes from its own scores on those sets by the one calibration
(``afrd.runtime.threshold_stats``, as ``afrd calibrate threshold``), at the FRR model.onnx's threshold was set for; parity and
threshold go into bundle.json (``afrd.runtime.bundle_variants``), which is what lets a runtime
load it. Torch-free.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from afrd.errors import BundleError, ConfigError
from afrd.runtime.bundle import ONNX_FILE, Bundle, utc_now
from afrd.runtime.bundle_variants import forget_variant, record_variant
from afrd.runtime.threshold_stats import calibration_statistics, set_batches

MIN_NORMAL = 4  # fewer normal sets give no usable spread of normal scores
DEFAULT_FRR = 0.01


@dataclass(frozen=True)
class ParityTolerance:
    """How far a variant may stray from model.onnx (defaults: fp16 of the 64 px models
    measured stays at 0.02-0.09 normal-score std and 1 % of the map range; their INT8 at 2-9
    std: BENCHMARKS.md)."""

    score: float = 0.25  # max |score difference| / std of model.onnx's normal scores
    map: float = 0.05  # max |map difference| / range of model.onnx's map values
    agreement: float = 0.95  # least share of sets judged alike, each at its own threshold


def heldout_source(
    bundle: Bundle, data: str | os.PathLike | None, splits: list[str] | None, category: str | None
) -> dict[str, Any]:
    """Where the check's held-out sets come from: ``data`` (split ``val`` unless ``splits``),
    else the data the bundle's threshold was calibrated on (its splits and category)."""
    if data is not None:
        if not Path(data).is_dir():
            raise ConfigError(f"--data {data} is not a directory")
        return {"path": os.path.abspath(data), "splits": splits or ["val"], "category": category}
    rec = ((bundle.meta.get("threshold") or {}).get("statistics") or {}).get("data") or {}
    path = rec.get("path") if isinstance(rec, dict) else None
    if not path:
        raise ConfigError(
            f"bundle {bundle.path}: checking a precision variant needs held-out image sets and "
            "the bundle's threshold records none it was calibrated on: pass --data ROOT"
        )
    if not Path(path).is_dir():
        raise ConfigError(
            f"bundle {bundle.path}: the data its threshold was calibrated on, {path}, is not a "
            "directory here: pass --data ROOT"
        )
    return {
        "path": path,
        "splits": splits or rec.get("splits") or ["val"],
        "category": category or rec.get("category"),
    }


def heldout_sets(bundle: Bundle, source: dict[str, Any]) -> list[Any]:
    """The ImageSets of ``source`` (as :func:`heldout_source` returns it)."""
    from afrd.data.datasets import open_dataset

    out = []
    for split in source["splits"]:
        ds = open_dataset(source["path"], split, category=source["category"], lights=bundle.lights)
        out += [ds[i] for i in range(len(ds))]
    return out


def default_frr(bundle: Bundle) -> float:
    """The FRR model.onnx's threshold was calibrated for (else DEFAULT_FRR)."""
    stats = (bundle.meta.get("threshold") or {}).get("statistics") or {}
    frr = stats.get("target_frr")
    return float(frr) if isinstance(frr, (int, float)) and 0 <= frr < 1 else DEFAULT_FRR


def check_variant(
    bundle: Bundle,
    onnx_file: str,
    sets: Iterable[Any],
    frr: float,
    tolerance: ParityTolerance = ParityTolerance(),
    source: dict | None = None,
    threads: int | None = None,
    made_here: bool = False,
) -> dict[str, Any]:
    """Run ``onnx_file`` and model.onnx on ``sets``; store parity and the variant's threshold in
    bundle.json, or raise BundleError (one line) when it strays past ``tolerance``, dropping
    its check (and with ``made_here`` the file: a variant just written that failed)."""
    from afrd.runtime.engines import create_engine

    if onnx_file == ONNX_FILE:
        raise ConfigError(f"{ONNX_FILE} is the reference, not a precision variant")
    bundle.file(onnx_file)  # BundleError naming the file when the bundle lacks it
    ref = create_engine("onnxruntime", bundle, device="cpu", threads=threads)
    var = create_engine("onnxruntime", bundle, device="cpu", threads=threads, onnx_file=onnx_file)
    s_ref, s_var, labels = [], [], []
    map_max = map_sum = 0.0
    pixels, lo, hi = 0, math.inf, -math.inf
    try:
        for x, lab in set_batches(sets):
            m0, a = ref.infer(x)
            m1, b = var.infer(x)
            d = np.abs(m1.astype(np.float64) - m0)
            d[~np.isfinite(d)] = np.inf  # NaN in the variant is as far off as it gets
            map_max, map_sum, pixels = (
                max(map_max, float(d.max())),
                map_sum + d.sum(),
                pixels + d.size,
            )
            lo, hi = min(lo, float(m0.min())), max(hi, float(m0.max()))
            s_ref += [float(v) for v in a]
            s_var += [float(v) for v in b]
            labels += lab
    finally:
        ref.close()
        var.close()
    s0, s1, lab = np.asarray(s_ref), np.asarray(s_var), np.asarray(labels)
    n_normal = int((lab != 1).sum())
    if n_normal < MIN_NORMAL:
        forget_variant(bundle, onnx_file, remove_file=made_here)
        raise ConfigError(
            f"checking {onnx_file}: {n_normal} held-out normal image sets in {source or 'the data'}"
            f", need at least {MIN_NORMAL}"
        )
    t0, _ = calibration_statistics(bundle, ref, ONNX_FILE, s0, lab, frr, source)
    t1, stats = calibration_statistics(bundle, var, onnx_file, s1, lab, frr, source)
    ds = np.abs(s1 - s0)
    ds[~np.isfinite(ds)] = np.inf
    spread = max(float(s0[lab != 1].std()), 1e-12)
    agree = float(((s0 > t0) == (s1 > t1)).mean())
    parity = {
        "reference": ONNX_FILE,
        "engine": var.name,
        "sets": int(lab.size),
        "normal": n_normal,
        "defective": int((lab == 1).sum()),
        "score": {
            "max_abs": _finite(ds.max()),
            "mean_abs": _finite(ds.mean()),
            "reference_normal_std": spread,
            "max_abs_in_std": _finite(ds.max() / spread),
        },
        "map": {
            "max_abs": _finite(map_max),
            "mean_abs": _finite(map_sum / max(pixels, 1)),
            "reference_range": hi - lo,
            "max_abs_in_range": _finite(map_max / max(hi - lo, 1e-12)),
        },
        "verdicts": {"agreement": agree, "frr": frr, "threshold": t1, "reference_threshold": t0},
        "tolerance": asdict(tolerance),
        "data": source,
        "checked": utc_now(),
    }
    failed = _failures(parity, tolerance)
    if failed:
        forget_variant(bundle, onnx_file, remove_file=made_here)
        gone = f"; {onnx_file} removed from the bundle" if made_here else ""
        raise BundleError(
            f"bundle {bundle.path}: precision variant {onnx_file} fails its parity check against "
            f"{ONNX_FILE} on {lab.size} held-out sets: {'; '.join(failed)}{gone} (limits: "
            "--max-score-diff, --max-map-diff, --min-agreement)"
        )
    record_variant(bundle, onnx_file, parity, {})
    try:
        bundle.set_threshold(t1, stats, "afrd-export check", variant=onnx_file)
    except BundleError:
        forget_variant(bundle, onnx_file, remove_file=made_here)
        raise
    return {"threshold": t1, "parity": parity, **stats}


def _finite(v: float) -> float | None:
    """JSON has no infinity: a NaN or infinite difference is recorded as null."""
    v = float(v)
    return v if math.isfinite(v) else None


def _failures(parity: dict, tol: ParityTolerance) -> list[str]:
    """Each criterion ``parity`` misses, as a phrase for the one-line error."""
    out = []
    score, amap, agree = parity["score"], parity["map"], parity["verdicts"]["agreement"]
    if score["max_abs_in_std"] is None or score["max_abs_in_std"] > tol.score:
        out.append(
            f"score max |diff| {_fmt(score['max_abs'])} = {_fmt(score['max_abs_in_std'])} std of "
            f"{ONNX_FILE}'s normal scores (limit {tol.score:g})"
        )
    if amap["max_abs_in_range"] is None or amap["max_abs_in_range"] > tol.map:
        out.append(
            f"map max |diff| {_fmt(amap['max_abs'])} = {_fmt(amap['max_abs_in_range'])} of its "
            f"value range (limit {tol.map:g})"
        )
    if agree < tol.agreement:
        out.append(f"verdicts agree on {agree:.1%} of the sets (limit {tol.agreement:.1%})")
    return out


def _fmt(v: float | None) -> str:
    return "NaN/inf" if v is None else f"{v:.3g}"


def summary(r: dict[str, Any], onnx_file: str) -> str:
    """One line on a passed check, as afrd-export prints it."""
    p = r["parity"]
    return (
        f"{onnx_file} vs {ONNX_FILE} on {p['sets']} held-out sets ({p['normal']} normal): score "
        f"max |diff| {p['score']['max_abs_in_std']:.3g} std, map max |diff| "
        f"{p['map']['max_abs_in_range']:.2%} of its range, verdicts agree on "
        f"{p['verdicts']['agreement']:.1%}; its threshold {r['threshold']:.6g} "
        f"({ONNX_FILE}'s on the same sets: {p['verdicts']['reference_threshold']:.6g})"
    )
