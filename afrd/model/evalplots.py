"""``afrd eval``'s pictures: image- and pixel-level ROC curves, and a grid of the top-scoring
image sets with ground truth and heatmap overlays (cv2 only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from afrd.model.metrics import roc_curve


def _curve_points(fpr: np.ndarray, tpr: np.ndarray, n: int = 400) -> np.ndarray:
    grid = np.linspace(0, 1, n)
    return np.stack([grid, np.interp(grid, fpr, tpr)], 1)


def draw_roc(r: dict, title: str, path: Path, px: int = 480) -> None:
    """Image-level (blue) and pixel-level (orange) ROC curves on one plot, drawn with cv2."""
    img = np.full((px, px, 3), 255, np.uint8)
    m0, m1 = 55, px - 25  # plot area [m0, m1] in both axes

    def to_px(p: np.ndarray) -> np.ndarray:
        return np.stack([m0 + p[:, 0] * (m1 - m0), m1 - p[:, 1] * (m1 - m0)], 1).astype(np.int32)

    for t in np.linspace(0, 1, 6):
        a = int(m0 + t * (m1 - m0))
        cv2.line(img, (a, m0), (a, m1), (230, 230, 230), 1)
        cv2.line(img, (m0, a), (m1, a), (230, 230, 230), 1)
        cv2.putText(img, f"{t:.1f}", (a - 10, m1 + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0))
        cv2.putText(
            img, f"{1 - t:.1f}", (m0 - 30, a + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0)
        )
    cv2.rectangle(img, (m0, m0), (m1, m1), (0, 0, 0), 1)
    cv2.line(img, (m0, m1), (m1, m0), (160, 160, 160), 1, cv2.LINE_AA)
    cv2.putText(img, title, (m0, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        img,
        "x: false positive rate, y: true positive rate",
        (m0, 45),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (80, 80, 80),
        1,
        cv2.LINE_AA,
    )
    legend_y = m1 - 40
    known = r["labels"] >= 0
    curves = []
    if r["metrics"]["i_auroc"] is not None:
        curves.append(
            (
                "image",
                roc_curve(r["labels"][known], r["scores"][known]),
                r["metrics"]["i_auroc"],
                (200, 80, 0),
            )
        )
    if r["metrics"]["p_auroc"] is not None:
        curves.append(
            (
                "pixel",
                roc_curve(r["masks"].ravel(), r["maps"].ravel()),
                r["metrics"]["p_auroc"],
                (0, 120, 255),
            )
        )
    for i, (name, (fpr, tpr), auc, color) in enumerate(curves):
        pts = to_px(np.stack([fpr, tpr], 1) if len(fpr) < 2000 else _curve_points(fpr, tpr))
        cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
        cv2.putText(
            img,
            f"{name} AUROC {auc:.3f}",
            (m1 - 170, legend_y + 18 * i),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            color,
            1,
            cv2.LINE_AA,
        )
    cv2.imwrite(str(path), img)


def draw_grid(r: dict, lights: Sequence[str], title: str, path: Path, rows: int = 8) -> None:
    """Rows: the highest-scoring defective sets, then the highest-scoring normal ones.
    Columns: every light, ground truth outline on the last light, heatmap overlay."""
    scores, labels = r["scores"], r["labels"]
    bad = [i for i in np.argsort(-scores) if labels[i] == 1][: rows // 2]
    rest = [i for i in np.argsort(-scores) if labels[i] != 1]
    pick = bad + rest[: rows - len(bad)]
    lo = float(np.percentile(r["maps"], 1))
    hi = float(np.percentile(r["maps"], 99.9)) + 1e-6
    tile = 128
    header = 24
    cols = len(lights) + 2
    out = np.full((header * 2 + len(pick) * (tile + header), cols * tile, 3), 255, np.uint8)
    cv2.putText(out, title, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for c, name in enumerate([*lights, "ground truth", "anomaly map"]):
        cv2.putText(
            out,
            name[:16],
            (c * tile + 4, header + 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    for row, i in enumerate(pick):
        y = header * 2 + row * (tile + header)
        imgs = r["images"][i]
        for c in range(len(lights)):
            out[y : y + tile, c * tile : (c + 1) * tile] = cv2.cvtColor(
                cv2.resize(imgs[c], (tile, tile), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR
            )
        base = cv2.cvtColor(
            cv2.resize(imgs[-1], (tile, tile), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR
        )
        mask = cv2.resize(r["masks"][i], (tile, tile), interpolation=cv2.INTER_NEAREST)
        gt = base.copy()
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(gt, contours, -1, (0, 255, 0), 1)
        heat = np.clip((cv2.resize(r["maps"][i], (tile, tile)) - lo) / (hi - lo), 0, 1)
        heat = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
        over = cv2.addWeighted(base, 0.5, heat, 0.5, 0)
        cv2.drawContours(over, contours, -1, (255, 255, 255), 1)
        out[y : y + tile, len(lights) * tile : (len(lights) + 1) * tile] = gt
        out[y : y + tile, (len(lights) + 1) * tile :] = over
        label = {1: "defective", 0: "good"}.get(int(labels[i]), "unlabelled")
        cv2.putText(
            out,
            f"{label}  score {scores[i]:.3f}",
            (4, y + tile + 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 180) if labels[i] == 1 else (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    cv2.imwrite(str(path), out)
