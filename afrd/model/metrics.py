"""I-AUROC, P-AUROC and AUPRO in numpy (+ cv2 for connected components); no sklearn."""

from __future__ import annotations

import cv2
import numpy as np

_trapz = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every distinct threshold, descending; tied scores form one step."""
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.all() or not y.any():
        raise ValueError("ROC needs both positive and negative samples")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # end index of each run of ties
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr = roc_curve(labels, scores)
    return float(_trapz(tpr, fpr))


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro): per-region overlap averaged over every connected defect region, against the
    false-positive rate on normal pixels, at every threshold (exact, one sort)."""
    masks = np.asarray(masks) > 0
    maps = np.asarray(maps, dtype=np.float64)
    weights = np.zeros(masks.shape, np.float64)
    n_regions = 0
    for i, m in enumerate(masks):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        for r in range(1, n):
            region = lab == r
            weights[i][region] = 1.0 / region.sum()
            n_regions += 1
    if n_regions == 0 or masks.all():
        raise ValueError("PRO needs at least one defect region and some normal pixels")
    s = maps.ravel()
    order = np.argsort(-s, kind="mergesort")
    s = s[order]
    pro_step = weights.ravel()[order] / n_regions
    fp_step = (~masks.ravel()[order]).astype(np.float64) / (~masks).sum()
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    return np.r_[0.0, np.cumsum(fp_step)[last]], np.r_[0.0, np.cumsum(pro_step)[last]]


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float:
    """Area under the PRO curve up to ``max_fpr``, normalized to [0, 1] (MVTec AD protocol)."""
    fpr, pro = pro_curve(masks, maps)
    keep = fpr <= max_fpr
    f, p = fpr[keep], pro[keep]
    if f[-1] < max_fpr:  # interpolate the curve at exactly max_fpr
        j = np.searchsorted(fpr, max_fpr)
        t = (max_fpr - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        f = np.r_[f, max_fpr]
        p = np.r_[p, pro[j - 1] + t * (pro[j] - pro[j - 1])]
    return float(_trapz(p, f) / max_fpr)
