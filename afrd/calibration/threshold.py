"""`afrd calibrate threshold BUNDLE --data DIR [--frr 0.01]`: the verdict threshold from data.

Scores held-out normal image sets with the bundle's own graph (ONNX Runtime), picks the
threshold so that at most the target fraction of normal parts would be rejected
(verdict = score > threshold), reports the false-accept rate on defective sets where the data
has labelled ones, and stores threshold + the score statistics in bundle.json (atomic rewrite;
the ONNX file and its sha256 are untouched). Torch-free.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from afrd import cliargs
from afrd.errors import ConfigError, DataError
from afrd.runtime.bundle import Bundle, utc_now
from afrd.runtime.bundle_products import check_product


def threshold_at_frr(normal_scores: Sequence[float], frr: float) -> float:
    """Largest-margin threshold with at most ``floor(frr * n)`` normal scores above it.

    With k = floor(frr * n) allowed rejects the threshold is the (n-k)-th smallest score, so the
    k highest normal scores (and only those, barring ties) are strictly above it.
    """
    s = np.sort(np.asarray(normal_scores, dtype=np.float64))
    n = s.size
    if n == 0:
        raise DataError("threshold calibration: no normal image sets scored")
    if not 0.0 <= frr < 1.0:
        raise ConfigError(f"--frr must be in [0, 1), got {frr}")
    k = int(math.floor(frr * n + 1e-9))
    return float(s[n - 1 - k])


def score_statistics(scores: np.ndarray) -> dict[str, float]:
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {"n": 0}
    q = np.quantile(s, [0.5, 0.9, 0.95, 0.99])
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std()),
        "min": float(s.min()),
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p95": float(q[2]),
        "p99": float(q[3]),
        "max": float(s.max()),
    }


def score_sets(engine: Any, sets: Iterable[Any], batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Score ImageSets; returns (scores, labels) with label -1 where the set has none."""
    scores: list[float] = []
    labels: list[int] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            _, s = engine.infer(np.stack(pending))
            scores.extend(float(v) for v in s)
            pending.clear()

    for item in sets:
        images = item.images
        if pending and images.shape != pending[0].shape:
            flush()
        pending.append(images)
        labels.append(-1 if item.label is None else int(item.label))
        if len(pending) >= batch:
            flush()
    flush()
    return np.asarray(scores, np.float64), np.asarray(labels, np.int64)


def calibrate(
    bundle: Bundle,
    sets: Iterable[Any],
    frr: float = 0.01,
    engine: Any = None,
    source: dict | None = None,
    write: bool = True,
    product: str | None = None,
) -> dict[str, Any]:
    """Score ``sets`` (ImageSets; label 0/None = normal, 1 = defective), set the threshold at the
    target false-reject rate, store it in ``bundle`` (unless ``write=False``): the bundle's
    threshold, or ``product``'s own in a multi-class bundle. Returns the stats."""
    if not 0.0 <= frr < 1.0:
        raise ConfigError(f"--frr must be in [0, 1), got {frr}")
    if product is not None:
        check_product(bundle.meta, f"bundle {bundle.path}", product)
    own = engine is None
    if own:
        from afrd.runtime.engines import create_engine

        engine = create_engine("onnxruntime", bundle, device="cpu")
    try:
        scores, labels = score_sets(engine, sets)
    finally:
        if own:
            engine.close()
    normal = scores[labels != 1]
    defective = scores[labels == 1]
    if normal.size == 0:
        raise DataError(
            "threshold calibration: the data has no normal image sets (label 0 or unlabelled)"
        )
    thr = threshold_at_frr(normal, frr)
    stats: dict[str, Any] = {
        "target_frr": frr,
        "achieved_frr": float((normal > thr).mean()),
        "normal": score_statistics(normal),
        "defective": score_statistics(defective),
        "far": float((defective <= thr).mean()) if defective.size else None,
        "resolution_frr": 1.0 / normal.size,
        "engine": getattr(engine, "name", "?"),
        "bundle_sha256": bundle.sha256,
        "computed": utc_now(),
        **({"data": source} if source else {}),
    }
    if frr > 0 and normal.size * frr < 1:
        stats["warning"] = (
            f"only {normal.size} normal sets: an FRR of {frr} cannot be resolved "
            f"(the smallest non-zero FRR measurable is {1 / normal.size:.3g}); threshold = max score"
        )
    if write:
        bundle.set_threshold(thr, stats, "afrd calibrate threshold", product)
    return {"threshold": thr, **stats}


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser(
        "afrd calibrate threshold",
        "Set a bundle's threshold from held-out normal image sets at a target FRR.",
    )
    p.add_argument("bundle", type=Path)
    cliargs.add_dataset_args(p, category_help="category of --data (one)")
    p.add_argument(
        "--split",
        action="append",
        help="split(s) to score (repeatable; default: val). Labelled defective sets "
        "count for the false-accept rate, the rest as normal.",
    )
    p.add_argument("--frr", type=float, default=0.01, help="target false-reject rate")
    p.add_argument(
        "--product",
        help="multi-class bundle: store the threshold as this product's own (default: the "
        "bundle's threshold, for every product without its own)",
    )
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")
    p.add_argument("--dry-run", action="store_true", help="print, do not write bundle.json")
    return p


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    if not 0.0 <= a.frr < 1.0:
        raise ConfigError(f"--frr must be in [0, 1), got {a.frr}")
    data = Path(a.data)
    if not data.is_dir():
        raise ConfigError(f"--data {data} is not a directory")
    category = cliargs.one_category(a.category)
    bundle = Bundle.load(a.bundle)
    if a.product is not None:
        check_product(bundle.meta, f"bundle {bundle.path}", a.product)
    from afrd.data.datasets import open_dataset
    from afrd.runtime.engines import create_engine

    splits = a.split or ["val"]
    datasets = [open_dataset(data, s, category=category, lights=bundle.lights) for s in splits]

    def iterate() -> Iterable[Any]:
        for ds in datasets:
            for i in range(len(ds)):
                yield ds[i]

    sets = cliargs.progress(iterate(), "scoring", total=sum(len(ds) for ds in datasets))
    engine = create_engine("onnxruntime", bundle, device="cpu", threads=a.threads)
    source = {"path": str(os.path.abspath(data)), "splits": splits, "category": category}
    try:
        r = calibrate(bundle, sets, a.frr, engine, source, write=not a.dry_run, product=a.product)
    finally:
        engine.close()
    n, d = r["normal"], r["defective"]
    print(f"normal sets {n['n']}: score mean {n['mean']:.4g} p99 {n['p99']:.4g} max {n['max']:.4g}")
    print(
        f"threshold {r['threshold']:.6g} at target FRR {a.frr:g}: achieved FRR "
        f"{r['achieved_frr']:.4g} (resolution {r['resolution_frr']:.3g})"
    )
    if r["far"] is not None:
        print(f"defective sets {d['n']}: false-accept rate {r['far']:.4g}")
    else:
        print("no labelled defective sets: false-accept rate not measured")
    if "warning" in r:
        print(f"WARNING: {r['warning']}")
    where = f"product {a.product!r} of " if a.product else ""
    print(
        "dry run: bundle.json unchanged"
        if a.dry_run
        else f"stored in {where}{bundle.path}/bundle.json"
    )
    return 0
