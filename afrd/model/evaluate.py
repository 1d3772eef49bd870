"""``afrd eval``: score a checkpoint on labelled image sets; JSON, a table and PNGs.

Writes ``<out>/metrics.json``, ``<out>/roc_<category>.png`` (image- and pixel-level ROC) and
``<out>/grid_<category>.png`` (image sets with ground truth and heatmap overlays).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from afrd import cliargs
from afrd.data.logical import defect_family
from afrd.errors import DataError
from afrd.model.checkpoint import inference_module, load_checkpoint, registration_of
from afrd.model.metrics import aupro, auroc, roc_curve
from afrd.model.sets import open_sets, registered, resize_mask, resize_set

# I-AUROC over the normal sets and the structural (logical) defects only, when there are both
METRICS = ("i_auroc", "p_auroc", "aupro", "i_auroc_structural", "i_auroc_logical")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _run_category(model: torch.nn.Module, sets, size: int, lights, batch: int, device) -> dict:
    """Maps, scores, labels, masks, a few images for the grid, and CPU/wall time per part."""
    n = len(sets)
    maps = np.zeros((n, size, size), np.float32)
    scores = np.zeros(n, np.float32)
    labels = np.full(n, -1, np.int64)
    masks = np.zeros((n, size, size), np.uint8)
    families = np.array([defect_family(sets[i]) or "" for i in range(n)])
    load_cpu = infer_cpu = infer_wall = 0.0
    images: list[np.ndarray] = []
    starts = range(0, n, batch)
    for start in cliargs.progress(starts, "scoring", total=len(starts), unit="batch"):
        c0 = time.process_time()
        chunk = [sets[i] for i in range(start, min(start + batch, n))]
        x = np.stack([resize_set(s, size, lights) for s in chunk])
        for j, s in enumerate(chunk):
            labels[start + j] = -1 if s.label is None else int(s.label)
            masks[start + j] = resize_mask(s, size)
        images.extend(x)
        c1, w1 = time.process_time(), time.perf_counter()
        with torch.no_grad():
            amap, score = model(torch.from_numpy(x).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        infer_wall += time.perf_counter() - w1
        infer_cpu += time.process_time() - c1
        load_cpu += c1 - c0
        maps[start : start + len(chunk)] = amap.cpu().numpy()
        scores[start : start + len(chunk)] = score.cpu().numpy()
    return {
        "maps": maps,
        "scores": scores,
        "labels": labels,
        "masks": masks,
        "images": images,
        "families": families,
        "timing": {
            "load_cpu_s_per_part": load_cpu / n,
            "infer_cpu_s_per_part": infer_cpu / n,
            "infer_wall_s_per_part": infer_wall / n,
        },
    }


def _metrics(r: dict) -> dict:
    labels, masks = r["labels"], r["masks"]
    out: dict = dict.fromkeys(METRICS)
    known = labels >= 0
    if known.any() and len(set(labels[known].tolist())) == 2:
        out["i_auroc"] = auroc(labels[known], r["scores"][known])
        for fam in ("structural", "logical"):
            pick = (labels == 0) | (r["families"] == fam)
            if (labels[pick] == 1).any() and (labels[pick] == 0).any():
                out[f"i_auroc_{fam}"] = auroc(labels[pick], r["scores"][pick])
    if masks.any() and not masks.all():
        out["p_auroc"] = auroc(masks.ravel(), r["maps"].ravel())
        out["aupro"] = aupro(masks, r["maps"])
    return out


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


def evaluate(
    checkpoint: str | Path,
    data_root: str | Path,
    categories: Sequence[str | None] | None,
    out_dir: str | Path,
    split: str = "test_public",
    *,
    batch_size: int = 8,
    device: str = "auto",
    sets: dict | None = None,
) -> dict:
    """Metrics per category and their mean; ``sets`` ({category: [ImageSet]}) replaces disk."""
    t_start = time.process_time()
    model, cfg = load_checkpoint(checkpoint)
    dev = _device(device)
    infer = inference_module(model).to(dev).eval()
    size, lights = int(cfg["image_size"]), tuple(cfg["lights"])
    registration = registration_of(cfg)
    if sets is not None:
        categories = list(sets)
    elif not categories:
        categories = list(cfg.get("categories") or [cfg.get("category")])  # multi-class: all
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_cat: dict = {}
    for cat in categories:
        # registered to the reference pose like the training sets were (when they were)
        if sets is not None:
            data = registered(sets[cat], registration)
        else:
            data = open_sets(data_root, split, cat, lights, size, registration)
        if len(data) == 0:
            raise DataError(f"no image sets for category {cat!r} in {data_root} split {split}")
        r = _run_category(infer, data, size, lights, batch_size, dev)
        c0 = time.process_time()
        r["metrics"] = _metrics(r)
        r["timing"]["metrics_cpu_s"] = time.process_time() - c0
        name = str(cat) if cat is not None else "all"
        c0 = time.process_time()
        draw_roc(r, f"{name} ({cfg['fusion']}, {cfg['teacher']})", out / f"roc_{name}.png")
        draw_grid(r, lights, f"{name}: {split}", out / f"grid_{name}.png")
        r["timing"]["plots_cpu_s"] = time.process_time() - c0
        per_cat[name] = {
            **r["metrics"],
            "sets": len(data),
            "defective": int((r["labels"] == 1).sum()),
            "timing": r["timing"],
        }
    mean = {
        k: (
            float(np.mean(v))
            if (v := [c[k] for c in per_cat.values() if c[k] is not None])
            else None
        )
        for k in METRICS
    }
    result = {
        "checkpoint": str(checkpoint),
        "split": split,
        "model": {
            k: cfg.get(k)
            for k in (
                "teacher",
                "teacher_weights_source",
                "fusion",
                "loss",
                "image_size",
                "lights",
                "epochs",
                "seed",
            )
        },
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "categories": per_cat,
        "mean": mean,
        "total_cpu_s": time.process_time() - t_start,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=list))
    return result


def format_table(result: dict) -> str:
    def f(v: float | None) -> str:
        return "   -  " if v is None else f"{v:.4f}"

    rows = [
        f"{'category':<20} {'I-AUROC':>8} {'P-AUROC':>8} {'AUPRO':>8} {'sets':>5} "
        f"{'ms/part (CPU)':>14}"
    ]
    for name, c in result["categories"].items():
        ms = 1000 * (c["timing"]["load_cpu_s_per_part"] + c["timing"]["infer_cpu_s_per_part"])
        rows.append(
            f"{name:<20} {f(c['i_auroc']):>8} {f(c['p_auroc']):>8} {f(c['aupro']):>8} "
            f"{c['sets']:>5} {ms:>14.1f}"
        )
    m = result["mean"]
    rows.append(f"{'mean':<20} {f(m['i_auroc']):>8} {f(m['p_auroc']):>8} {f(m['aupro']):>8}")
    if m.get("i_auroc_structural") is not None or m.get("i_auroc_logical") is not None:
        rows.append(f"{'I-AUROC by defect':<20} {'struct.':>8} {'logical':>8}")
        for name, c in [*result["categories"].items(), ("mean", m)]:
            rows.append(
                f"{name:<20} {f(c.get('i_auroc_structural')):>8} {f(c.get('i_auroc_logical')):>8}"
            )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    p = cliargs.parser("afrd eval", __doc__.split("\n")[0].replace("``", ""))
    p.add_argument("checkpoint", help="checkpoint from afrd train (model.pt)")
    cliargs.add_dataset_args(
        p,
        split="test_public",
        category_help="categories to evaluate (repeatable or a comma list; default: the "
        "checkpoint's)",
    )
    p.add_argument("--out", default=None, help="output dir (default <checkpoint dir>/eval)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cats = cliargs.categories(a.category)
    out = a.out or str(Path(a.checkpoint).parent / "eval")
    result = evaluate(
        a.checkpoint, a.data, cats, out, a.split, batch_size=a.batch_size, device=a.device
    )
    print(format_table(result))
    print(
        f"teacher {result['model']['teacher']} ({result['model']['teacher_weights_source']}), "
        f"fusion {result['model']['fusion']}, loss {result['model']['loss']}"
    )
    print(f"wrote {out}/metrics.json, roc_*.png, grid_*.png")
    return 0
