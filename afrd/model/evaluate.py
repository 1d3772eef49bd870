"""``afrd eval``: score a checkpoint on labelled image sets; JSON, a table and PNGs.

Writes ``<out>/metrics.json``, ``<out>/roc_<category>.png`` (image- and pixel-level ROC) and
``<out>/grid_<category>.png`` (image sets with ground truth and heatmap overlays). Beside the
overall I-AUROC: per defect family (structural, logical) and per named defect type
(``defect_type``: the logical family's count, pairing, layout; the renders' dent, stain, ...),
each over the normal sets and those defects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from afrd import cliargs
from afrd.data.logical import defect_family
from afrd.errors import DataError
from afrd.model.checkpoint import inference_module, load_checkpoint, registration_of
from afrd.model.evalplots import draw_grid, draw_roc
from afrd.model.metrics import aupro, auroc
from afrd.model.sets import open_sets, registered, resize_mask, resize_set

# I-AUROC over the normal sets and the structural (logical) defects only, when there are both
METRICS = ("i_auroc", "p_auroc", "aupro", "i_auroc_structural", "i_auroc_logical")


def defect_type(s) -> str | None:
    """The named type of a defective ImageSet (``count``, ``pairing``, ``layout`` of the logical
    family; ``dent``, ``stain``, ... of the structural renders), None for a good or unlabelled
    set or one that does not say. Read from ``meta["defect"]`` (rendered in memory) or the
    ``defect`` key of an Eyecandies-layout metadata.yaml (``afrd synth`` writes it; Eyecandies'
    own files have none)."""
    if getattr(s, "label", None) != 1:
        return None
    meta = getattr(s, "meta", None) or {}
    name = meta.get("defect")
    files = meta.get("files") or {}
    if name is None and "metadata" in files:
        from afrd.data.eyecandies import parse_metadata  # the dataset reader: only here

        name = parse_metadata(Path(files["metadata"])).get("defect")
    return None if name in (None, "", "none") else str(name)


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
    types = np.array([defect_type(sets[i]) or "" for i in range(n)])
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
        "types": types,
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


def _by_type(r: dict) -> dict:
    """Per named defect type: I-AUROC over the normal sets and that type's defects, and how
    many of them there are (none when no set names its type or there is no normal set)."""
    labels, types = r["labels"], r["types"]
    out = {}
    for name in sorted(set(types[labels == 1].tolist()) - {""}):
        pick = (labels == 0) | (types == name)
        if (labels[pick] == 0).any():
            out[name] = {
                "i_auroc": auroc(labels[pick], r["scores"][pick]),
                "defective": int((types == name).sum()),
            }
    return out


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
        by_type = _by_type(r)
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
            "i_auroc_by_type": by_type,
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
    names = sorted({t for c in per_cat.values() for t in c["i_auroc_by_type"]})
    mean["i_auroc_by_type"] = {
        t: float(np.mean([c["i_auroc_by_type"][t]["i_auroc"] for c in per_cat.values()
                          if t in c["i_auroc_by_type"]]))
        for t in names
    }  # fmt: skip
    result = {
        "checkpoint": str(checkpoint),
        "split": split,
        "model": {
            k: cfg.get(k)
            for k in (
                "model_kind",
                "preset",
                "global",
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
    if m.get("i_auroc_by_type"):
        rows.append(f"{'I-AUROC by type':<20} {'type':<16} {'I-AUROC':>8} {'defective':>9}")
        for name, c in result["categories"].items():
            for t, v in c["i_auroc_by_type"].items():
                rows.append(f"{name:<20} {t:<16} {f(v['i_auroc']):>8} {v['defective']:>9}")
        if len(result["categories"]) > 1:
            for t, v in m["i_auroc_by_type"].items():
                rows.append(f"{'mean':<20} {t:<16} {f(v):>8}")
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
