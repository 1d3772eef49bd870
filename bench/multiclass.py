"""Multi-class benchmark: one model per product vs one model for all (naive, and with DCAM).

Same run, same seed, same rendered sets (every renderer category, ``fixtured`` parts): AFRD at
the ``afrd-cpu`` preset's settings (EfficientNet-Lite0 ImageNet teacher, attention fusion, 128 px,
AdamW 2e-3, batch 8, cached teacher maps), trained four ways:

- ``one-class``: one model per category, ``STEPS`` optimiser steps each;
- ``naive``: one model on the union of the categories (``afrd train --multi-class``),
  ``MULTI_STEPS`` steps (half of what the one-class models take together);
- ``dcam``: the same with DCAM's training-only attention blocks and losses (``--dcam``);
- ``dcam-no-blocks``: DCAM's losses without the blocks (the ablation that says whether the
  attention or the loss pair does the work).

Each is scored per category on the same good and structurally defective test sets (I-AUROC), and
timed per part on one thread; the multi-class models are exported with ``afrd-export onnx``'s
function and their graphs' node counts compared (DCAM's blocks must be gone). Reports the gap
closed: (dcam - naive) / (one-class - naive) on the mean I-AUROC. Writes
``bench/out/multiclass<tag>.json`` (with every epoch's loss) and prints a table. One seed's
per-category figures swing by 0.1 or more, so read several: run one process per seed (``--seed
N --tag _seedN``) and join them with ``--merge``, which prints each seed's means and the mean and
standard error over seeds.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/multiclass.py --threads 1 --seed 0 --tag _seed0
    .venv/bin/python bench/multiclass.py --merge bench/out/multiclass_seed*.json
    .venv/bin/python bench/multiclass.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from cad import STRUCTURAL, mean_se, model_history, render, scores  # noqa: E402

from afrd.data.render import CATEGORIES  # noqa: E402
from afrd.model.checkpoint import inference_module, load_checkpoint  # noqa: E402
from afrd.model.metrics import auroc  # noqa: E402
from afrd.model.train import TrainConfig, train  # noqa: E402

CONFIGS = {
    "cpu": {"size": 128, "steps": 256, "multi_steps": 512, "train": 64, "val": 32, "test": 24},
    "quick": {"size": 64, "steps": 4, "multi_steps": 8, "train": 8, "val": 4, "test": 4},
}
KINDS = ("one-class", "naive", "dcam", "dcam-no-blocks")
MULTI = ("naive", "dcam", "dcam-no-blocks")  # trained on the union of the categories


def sets_for(cat: str, cfg: dict, seed: int) -> dict:
    size, n = cfg["size"], cfg["test"]
    return {
        "train": [render(cat, "train", i, None, size, seed) for i in range(cfg["train"])],
        "val": [render(cat, "val", i, None, size, seed) for i in range(cfg["val"])],
        "good": [render(cat, "test_public", i, None, size, seed) for i in range(n)],
        "bad": [
            render(cat, "test_public", 1000 + i, STRUCTURAL[i % 3], size, seed) for i in range(n)
        ],
    }


def fit(name: str, train_sets: list, val_sets: list, steps: int, cfg: dict, a, **kw) -> Path:
    tc = TrainConfig(
        out=str(Path(a.out) / "multiclass_runs" / name),
        teacher="efficientnet_lite0",
        fusion="attention",
        loss="pixel",
        image_size=cfg["size"],
        lr=2e-3,
        batch_size=8,
        steps=steps,
        feature_cache="ram",
        seed=a.seed,
        progress=False,
        **kw,
    )
    return train(tc, sets=train_sets, norm_sets=val_sets)


def evaluate(ckpt: Path, data: dict, size: int) -> dict:
    model, _ = load_checkpoint(ckpt)
    infer = inference_module(model).eval()
    out = {}
    for cat, d in data.items():
        good, ms = scores(infer, d["good"], size)
        bad, _ = scores(infer, d["bad"], size)
        labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
        out[cat] = {"i_auroc": auroc(labels, np.r_[good, bad]), "ms_per_part": round(ms, 2)}
    return out


def onnx_nodes(ckpt: Path, out: Path) -> int:
    import onnx

    from afrd.export.onnx_export import export_onnx

    bundle = export_onnx(ckpt, out, force=True, seed=0, echo=False)
    return len(onnx.load(str(bundle.onnx_path)).graph.node)


def merge(paths: list[str], out: Path) -> int:
    """Join per-seed runs (same config and categories): each seed's mean I-AUROC per kind and
    gap closed, then their mean and standard error over seeds."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    for p, r in zip(paths, runs, strict=True):
        if "mean_i_auroc" not in r or "gap" not in r:
            raise SystemExit(f"--merge: {p} is not a finished run of every kind (still training?)")
    for r in runs[1:]:
        if r["config"] != runs[0]["config"] or set(r["results"]["naive"]) != set(
            runs[0]["results"]["naive"]
        ):
            raise SystemExit(
                f"--merge: seed {r['seed']} has other settings than seed {runs[0]['seed']}"
            )
    kinds = [k for k in KINDS if all(r["results"].get(k) for r in runs)]
    table = {k: [r["mean_i_auroc"][k] for r in runs] for k in kinds}
    gaps = {
        k: [(r["mean_i_auroc"][k] - r["mean_i_auroc"]["naive"]) / r["gap"] for r in runs]
        for k in kinds
        if k.startswith("dcam")
    }

    seeds = [r["seed"] for r in runs]
    rows = [
        f"{'seed':<6}"
        + "".join(f" {k:>15}" for k in kinds)
        + "".join(f" {'gap ' + k:>20}" for k in gaps)
    ]
    for n, seed in enumerate(seeds):
        rows.append(
            f"{seed:<6}"
            + "".join(f" {table[k][n]:>15.3f}" for k in kinds)
            + "".join(f" {gaps[k][n]:>19.0%} " for k in gaps)
        )
    summary = {k: mean_se(v) for k, v in table.items()}
    gap_summary = {k: mean_se(v) for k, v in gaps.items()}
    rows.append(
        f"{'mean':<6}"
        + "".join(f" {summary[k][0]:>8.3f}+-{summary[k][1]:.3f}" for k in kinds)
        + "".join(f" {gap_summary[k][0]:>12.0%} +-{gap_summary[k][1]:.0%}" for k in gaps)
    )
    pooled = {k: summary[k][0] for k in kinds}
    closed = {
        k: (pooled[k] - pooled["naive"]) / (pooled["one-class"] - pooled["naive"]) for k in gaps
    }
    # paired differences to the naive model: robust where one seed's gap is near zero and its
    # ratio blows up, so the gap closed to read is the one on the seed means
    paired = {
        k: mean_se([a - b for a, b in zip(table[k], table["naive"], strict=True)])
        for k in kinds
        if k != "naive"
    }
    rows.append(
        "minus naive, mean +- s.e. over seeds: "
        + ", ".join(f"{k} {m:+.3f} +- {se:.3f}" for k, (m, se) in paired.items())
    )
    rows.append(
        "gap closed on the seed-mean I-AUROCs (the figure to read): "
        + ", ".join(f"{k} {v:.0%}" for k, v in closed.items())
    )
    print("\n".join(rows))
    res = {
        "seeds": seeds,
        "files": paths,
        "config": runs[0]["config"],
        "mean_i_auroc": table,
        "gap_closed": gaps,
        "mean_se": summary,
        "gap_closed_mean_se": gap_summary,
        "gap_closed_on_means": closed,
        "minus_naive_mean_se": paired,
        "per_category": {
            k: {c: [r["results"][k][c]["i_auroc"] for r in runs] for c in runs[0]["results"][k]}
            for k in kinds
        },
    }
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=list(CONFIGS), default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-export", action="store_true", help="skip the ONNX node count")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="rows to train")
    ap.add_argument("--kl-weight", type=float, default=None, help="DCAM's (default: the model's)")
    ap.add_argument("--tau", type=float, default=1.0, help="DCAM's softmax temperature")
    ap.add_argument("--tag", default="", help="multiclass<tag>.json")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="join per-seed runs, train nothing")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = ap.parse_args()
    if a.merge:
        return merge(a.merge, Path(a.out) / f"multiclass_merged{a.tag}.json")
    torch.set_num_threads(a.threads)
    cfg = dict(CONFIGS["quick" if a.quick else a.config])
    path = Path(a.out) / (f"multiclass_quick{a.tag}.json" if a.quick else f"multiclass{a.tag}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = {c: sets_for(c, cfg, a.seed) for c in a.categories}
    dcam_opts = {"tau": a.tau} | ({} if a.kl_weight is None else {"kl_weight": a.kl_weight})
    res: dict = {
        "config": cfg,
        "seed": a.seed,
        "threads": a.threads,
        "machine": platform.platform(),
        "render_s": round(time.perf_counter() - t0, 1),
        "dcam_options": dcam_opts,
        "results": {k: {} for k in a.kinds},
        "train_s": {},
        "history": {},
    }
    union = [s for c in a.categories for s in data[c]["train"]]
    union_val = [s for c in a.categories for s in data[c]["val"]]
    runs = [(k, union, union_val, cfg["multi_steps"]) for k in MULTI if k in a.kinds]
    if "one-class" in a.kinds:
        runs += [
            (f"one-class/{c}", data[c]["train"], data[c]["val"], cfg["steps"]) for c in a.categories
        ]
    ckpts = {}
    for name, tr, va, steps in runs:
        t0 = time.perf_counter()
        if name.startswith("one-class/"):
            extra: dict = {"category": name.split("/", 1)[1]}
        else:
            extra = {"categories": tuple(a.categories), "dcam": name != "naive"}
        if name.startswith("dcam"):
            extra["extra"] = {"dcam": dcam_opts | {"blocks": name == "dcam"}}
        ckpts[name] = fit(name + a.tag, tr, va, steps, cfg, a, **extra)
        res["train_s"][name] = round(time.perf_counter() - t0, 1)
        res["history"][name] = [round(h["loss"], 5) for h in model_history(ckpts[name])]
        if name.startswith("one-class/"):
            cat = name.split("/", 1)[1]
            res["results"]["one-class"].update(evaluate(ckpts[name], {cat: data[cat]}, cfg["size"]))
        else:
            res["results"][name] = evaluate(ckpts[name], data, cfg["size"])
        path.write_text(json.dumps(res, indent=2))
        print(name, res["train_s"][name], "s", flush=True)
    kinds = list(res["results"])
    res["mean_i_auroc"] = {
        k: float(np.mean([v["i_auroc"] for v in res["results"][k].values()])) for k in kinds
    }
    res["ms_per_part"] = {
        k: float(np.mean([v["ms_per_part"] for v in res["results"][k].values()])) for k in kinds
    }
    mean = res["mean_i_auroc"]
    if "one-class" in mean and "naive" in mean:
        res["gap"] = gap = mean["one-class"] - mean["naive"]
        res["gap_closed"] = {
            k: (mean[k] - mean["naive"]) / gap if abs(gap) > 1e-9 else None
            for k in kinds
            if k.startswith("dcam")
        }
    if not a.no_export:
        res["onnx_nodes"] = {
            k: onnx_nodes(ckpts[k], Path(a.out) / "multiclass_runs" / f"bundle_{k}{a.tag}")
            for k in MULTI
            if k in ckpts
        }
    path.write_text(json.dumps(res, indent=2))
    rows = [f"{'category':<10}" + "".join(f" {k:>15}" for k in kinds)]
    for c in a.categories:
        rows.append(
            f"{c:<10}" + "".join(f" {res['results'][k][c]['i_auroc']:>15.3f}" for k in kinds)
        )
    rows.append(f"{'mean':<10}" + "".join(f" {mean[k]:>15.3f}" for k in kinds))
    rows.append(f"{'ms/part':<10}" + "".join(f" {res['ms_per_part'][k]:>15.1f}" for k in kinds))
    print("\n".join(rows))
    print(f"gap closed: {res.get('gap_closed')}; ONNX nodes: {res.get('onnx_nodes')}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
