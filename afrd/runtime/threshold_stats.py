"""The one threshold calibration, as numbers: scores of held-out image sets -> the threshold at
a target false-reject rate and the statistics it is stored with.

``afrd calibrate threshold`` (afrd.calibration.threshold) sets model.onnx's threshold with it,
``afrd-export`` each precision variant's (afrd.export.variant_check), so a variant's threshold
is calibrated exactly as model.onnx's is; it lives here, below both, because those two stages
do not import each other.

The FRR measured on the parts that set the threshold flatters it (with n x FRR < 1 the
threshold is simply the highest normal score, and no normal is above it), so the statistics
also give the expected FRR on new parts, (k+1)/(n+1) with k normals above the threshold, a
one-sided 95% Clopper-Pearson upper bound (a bisection on the binomial CDF: no scipy), and a
warning when n x FRR < 5. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from afrd.errors import ConfigError, DataError
from afrd.runtime.bundle import Bundle, utc_now


def threshold_at_frr(normal_scores: Sequence[float], frr: float) -> float:
    """The threshold whose expected FRR on new parts is at most ``frr``: the (n-k)-th smallest
    normal score, k the most normals above it with (k+1)/(n+1) <= frr (``expected_frr``), and
    k = 0 (the highest score) when even that expects more (``small_set_warning`` says so).

    Why not k = floor(frr * n), the FRR on the calibration parts themselves: that threshold
    rejects (k+1)/(n+1) of new parts, 7.3 % at a 5 % target on 40 normals (the demo's live
    false rejects ran at 8-10 % with it).
    """
    s = np.sort(np.asarray(normal_scores, dtype=np.float64))
    n = s.size
    if n == 0:
        raise DataError("threshold calibration: no normal image sets scored")
    if not 0.0 <= frr < 1.0:
        raise ConfigError(f"--frr must be in [0, 1), got {frr}")
    k = max(0, int(math.floor(frr * (n + 1) + 1e-9)) - 1)
    return float(s[n - 1 - k])


# n x FRR below this: fewer than five normals are expected above the threshold, so it rests on
# the few highest normal scores and the FRR measured on the same parts says little.
MIN_EXPECTED_REJECTS = 5
CONFIDENCE = 0.95  # of the reported upper bound on the FRR


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (no overflow at large n)."""
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq, top = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    return min(
        1.0,
        sum(
            math.exp(top - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
            for i in range(k + 1)
        ),
    )


def frr_upper_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen k times in n: the p at which
    P(X <= k) = 1 - confidence (bisection; the binomial CDF falls as p grows)."""
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):  # 2^-60: far below anything printed
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binomial_cdf(k, n, mid) > 1.0 - confidence else (lo, mid)
    return hi


def expected_frr(k: int, n: int) -> float:
    """FRR of a threshold with k of n normal scores above it, on new parts: (k+1)/(n+1).

    A new normal score is equally likely to rank anywhere among the n + 1, so it lands above
    the (n-k)-th smallest of n with probability (k+1)/(n+1), whatever the score distribution."""
    return (k + 1) / (n + 1)


def small_set_warning(n: int, frr: float) -> str | None:
    """One line when n x frr < MIN_EXPECTED_REJECTS, naming n, frr and the n needed."""
    if n * frr >= MIN_EXPECTED_REJECTS:
        return None
    if frr == 0:
        return (
            f"target FRR 0 with {n} normal sets: the threshold is the highest normal score, "
            f"which new normal parts exceed at a rate of about 1/(n+1) = {1 / (n + 1):.3g}, not 0"
        )
    return (
        f"only {n} normal sets for a target FRR of {frr:g} (n x FRR = {n * frr:.3g} < "
        f"{MIN_EXPECTED_REJECTS}): the threshold rests on the few highest normal scores and the "
        f"FRR measured on the same parts overstates it; {math.ceil(MIN_EXPECTED_REJECTS / frr)} "
        f"normal sets would give n x FRR >= {MIN_EXPECTED_REJECTS}"
    )


def score_statistics(scores: np.ndarray) -> dict[str, float]:
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {"n": 0}
    # the deciles, p95 and p99: the bins the daemon's drift watch compares passed parts with
    levels = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99)
    q = np.quantile(s, [k / 100 for k in levels])
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std()),
        "min": float(s.min()),
        **{f"p{k}": float(v) for k, v in zip(levels, q, strict=True)},
        "max": float(s.max()),
    }


def set_batches(sets: Iterable[Any], batch: int = 4) -> Iterator[tuple[np.ndarray, list[int]]]:
    """ImageSets as (uint8 [B, N, H, W, 3], labels) batches of one frame shape; label -1 where
    the set has none."""
    pending: list[np.ndarray] = []
    labels: list[int] = []
    for item in sets:
        images = item.images
        if pending and (images.shape != pending[0].shape or len(pending) >= batch):
            yield np.stack(pending), labels
            pending, labels = [], []
        pending.append(images)
        labels.append(-1 if item.label is None else int(item.label))
    if pending:
        yield np.stack(pending), labels


def score_sets(engine: Any, sets: Iterable[Any], batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Score ImageSets; returns (scores, labels) with label -1 where the set has none."""
    scores: list[float] = []
    labels: list[int] = []
    for x, lab in set_batches(sets, batch):
        _, s = engine.infer(x)
        scores.extend(float(v) for v in s)
        labels.extend(lab)
    return np.asarray(scores, np.float64), np.asarray(labels, np.int64)


def threshold_statistics(
    scores: np.ndarray, labels: np.ndarray, frr: float
) -> tuple[float, dict[str, Any]]:
    """The one calibration: (threshold, statistics) at target ``frr`` from scores of labelled
    sets (1 = defective, anything else normal). Every graph's threshold comes from here."""
    if not 0.0 <= frr < 1.0:
        raise ConfigError(f"--frr must be in [0, 1), got {frr}")
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    normal, defective = scores[labels != 1], scores[labels == 1]
    if normal.size == 0:
        raise DataError(
            "threshold calibration: the data has no normal image sets (label 0 or unlabelled)"
        )
    thr = threshold_at_frr(normal, frr)
    k, n = int((normal > thr).sum()), int(normal.size)
    stats: dict[str, Any] = {
        "target_frr": frr,
        "achieved_frr": k / n,
        "rejected_normals": k,
        # on new parts: what the achieved FRR, measured on the parts that set it, is not
        "expected_frr": expected_frr(k, n),
        "frr_upper_95": frr_upper_bound(k, n, CONFIDENCE),
        "normal": score_statistics(normal),
        "defective": score_statistics(defective),
        "far": float((defective <= thr).mean()) if defective.size else None,
        "resolution_frr": 1.0 / n,
    }
    warning = small_set_warning(n, frr)
    if warning:
        stats["warning"] = warning
    return thr, stats


def calibration_statistics(
    bundle: Bundle,
    engine: Any,
    graph: str,
    scores: np.ndarray,
    labels: np.ndarray,
    frr: float,
    source: dict | None,
) -> tuple[float, dict[str, Any]]:
    """:func:`threshold_statistics` plus what they came from: graph, engine, bundle, data."""
    thr, stats = threshold_statistics(scores, labels, frr)
    stats["onnx_file"] = graph
    stats["engine"] = getattr(engine, "name", "?")
    stats["bundle_sha256"] = bundle.sha256
    stats["computed"] = utc_now()
    if source:
        stats["data"] = source
    return thr, stats


def print_report(r: dict[str, Any], graph: str) -> None:
    """What a calibration of ``graph`` found, as the command prints it."""
    n, d = r["normal"], r["defective"]
    print(
        f"{graph}: normal sets {n['n']}: score mean {n['mean']:.4g} p99 {n['p99']:.4g} "
        f"max {n['max']:.4g}"
    )
    print(
        f"  threshold {r['threshold']:.6g} at target FRR {r['target_frr']:g}: achieved FRR "
        f"{r['achieved_frr']:.4g} on these sets (resolution {r['resolution_frr']:.3g})"
    )
    print(
        f"  expected FRR on new parts {r['expected_frr']:.4g} = (k+1)/(n+1), k = "
        f"{r['rejected_normals']} of n = {n['n']} normal sets above the threshold; 95% upper "
        f"bound {r['frr_upper_95']:.4g} (Clopper-Pearson)"
    )
    if r["far"] is not None:
        print(f"  defective sets {d['n']}: false-accept rate {r['far']:.4g}")
    else:
        print("  no labelled defective sets: false-accept rate not measured")
    if "warning" in r:
        print(f"WARNING: {r['warning']}")
