"""Learning curve: image AUROC against optimiser steps for AFRD trained on cached teacher maps.

Does the student converge at a CPU budget, and how many steps are worth their minutes? One
training run per method and category; at each milestone (in optimiser steps) the model is
checkpointed, its per-pixel map statistics are fitted on the held-out normal sets and it is
scored on the test split, exactly as ``afrd train`` + ``afrd eval`` would, then training
continues from where it was. Rendered data (the fusion benchmark's renderer and stamp): 128 px,
64 train / 32 val / 48 test per category, fixtured pose by default. Writes JSON after every
milestone (``--resume`` skips finished method/category runs) and prints a table.

    .venv/bin/python bench/learning_curve.py --threads 1           # ~25 min on one thread
    .venv/bin/python bench/learning_curve.py --quick                # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from afrd.data.lights import DEFAULT_LIGHTS  # noqa: E402
from afrd.data.render import CATEGORIES  # noqa: E402

SETTINGS = {
    "teacher": "efficientnet_lite0",
    "image_size": 128,
    "batch_size": 8,
    "lr": 2e-3,
    "train": 64,
    "val": 32,
    "test": 48,
    "categories": list(CATEGORIES),
    "defect_rate": 0.5,
    "pose": "fixtured",
    "steps": [16, 32, 64, 128, 256, 512, 1024],
}
QUICK = {"image_size": 64, "train": 8, "val": 4, "test": 8, "categories": list(CATEGORIES[:1])}
QUICK["steps"] = [2, 4]


def label(method: str) -> str:
    if method.startswith("single:"):
        return f"RD {DEFAULT_LIGHTS[int(method.split(':')[1])]}"
    return method


def run_one(cfg: dict, data: Path, work: Path, method: str, cat: str, seed: int, save) -> list:
    """Train ``method`` on ``cat`` to the last milestone, scoring at each; returns the points."""
    import torch

    from afrd.model.checkpoint import save_checkpoint
    from afrd.model.evaluate import evaluate
    from afrd.model.mapnorm import fit_map_stats
    from afrd.model.sets import normal_subset, open_sets, resize_set
    from afrd.model.train import TrainConfig, train

    size = cfg["image_size"]
    val = normal_subset(open_sets(data, "val", cat, DEFAULT_LIGHTS, size))
    val_arrays = [resize_set(val[i], size, DEFAULT_LIGHTS) for i in range(len(val))]
    n_train = len(normal_subset(open_sets(data, "train", cat, DEFAULT_LIGHTS, size)))
    steps_per_epoch = -(-n_train // cfg["batch_size"])
    milestones = {-(-s // steps_per_epoch): s for s in cfg["steps"]}  # epoch -> nominal steps
    run_dir = work / "runs" / method.replace(":", "_") / cat
    points: list = []
    clock = {"train": 0.0, "since": time.perf_counter()}

    def on_epoch(epoch: int, model) -> None:
        if epoch not in milestones:
            return
        clock["train"] += time.perf_counter() - clock["since"]
        rng = torch.get_rng_state()  # scoring builds a model; training must not notice
        fit_map_stats(model, val_arrays)
        ckpt = save_checkpoint(
            run_dir / "milestone.pt",
            model,
            {"lights": list(DEFAULT_LIGHTS), "loss": "pixel", "category": cat},
        )
        r = evaluate(ckpt, data, [cat], run_dir / "eval", "test_public")["categories"][cat]
        torch.set_rng_state(rng)
        points.append(
            {
                "steps": epoch * steps_per_epoch,
                "epoch": epoch,
                "i_auroc": r["i_auroc"],
                "p_auroc": r["p_auroc"],
                "aupro": r["aupro"],
                "train_s": round(clock["train"], 1),
            }
        )
        save(points)
        print(
            f"  {label(method):<12} {cat:<8} step {epoch * steps_per_epoch:>5} "
            f"I-AUROC {r['i_auroc']:.3f} P-AUROC {r['p_auroc']:.3f} "
            f"(train {clock['train']:.0f} s)",
            flush=True,
        )
        clock["since"] = time.perf_counter()

    tc = TrainConfig(
        data=str(data),
        out=str(run_dir),
        category=cat,
        teacher=cfg["teacher"],
        fusion=method,
        epochs=max(milestones),
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        image_size=size,
        seed=seed,
        lights=DEFAULT_LIGHTS,
        norm_split=None,  # fitted at each milestone instead
        progress=False,
    )
    train(tc, on_epoch=on_epoch)
    return points


def table(results: dict, methods: list[str], categories: list[str]) -> str:
    lines = []
    for m in methods:
        per_cat = results.get(m, {})
        steps = sorted({p["steps"] for pts in per_cat.values() for p in pts})
        if not steps:
            continue
        head = f"{label(m):<14}{'steps':>6}" + "".join(f"{c[:8]:>9}" for c in categories)
        lines += [head + f"{'mean':>9}{'train s':>9}", "-" * (len(head) + 18)]
        for s in steps:
            vals, secs = [], 0.0
            cells = ""
            for c in categories:
                p = next((p for p in per_cat.get(c, []) if p["steps"] == s), None)
                cells += f"{p['i_auroc']:9.3f}" if p else f"{'-':>9}"
                if p:
                    vals.append(p["i_auroc"])
                    secs += p["train_s"]
            mean = f"{sum(vals) / len(vals):9.3f}" if len(vals) == len(categories) else " " * 9
            lines.append(f"{'':<14}{s:>6}{cells}{mean}{secs:9.0f}")
        lines.append("")
    return "I-AUROC by optimiser steps (train s: summed over categories)\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["attention", "single:5"])
    ap.add_argument("--categories", nargs="+", default=None)
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="milestones (steps)")
    ap.add_argument("--pose", default=None, help="fixtured (default) | conveyor | free")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 category, 64 px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "learning_curve.json"))
    ap.add_argument("--resume", action="store_true", help="skip finished runs in --out")
    a = ap.parse_args(argv)

    import torch
    from fusion import ensure_data

    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = {**SETTINGS, **(QUICK if a.quick else {})}
    for key, val in (("categories", a.categories), ("steps", a.steps), ("pose", a.pose)):
        if val is not None:
            cfg[key] = val
    out = Path(a.out)
    work = out.parent / f"learning_curve_{cfg['pose']}{'_quick' if a.quick else ''}"
    data = ensure_data(work / "data", cfg, a.seed)
    report = {
        "settings": cfg,
        "seed": a.seed,
        "methods": a.methods,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "results": {},
    }
    if a.resume and out.is_file():
        old = json.loads(out.read_text())
        if old.get("settings") == cfg and old.get("seed") == a.seed:
            report["results"] = old.get("results", {})
    t0 = time.perf_counter()

    def write() -> None:
        report["wall_s"] = round(time.perf_counter() - t0, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))

    for method in a.methods:
        res = report["results"].setdefault(method, {})
        for cat in cfg["categories"]:
            done = res.get(cat, [])
            if done and done[-1]["steps"] >= max(cfg["steps"]):
                continue

            def save(points, res=res, cat=cat) -> None:
                res[cat] = points
                write()

            run_one(cfg, data, work, method, cat, a.seed, save)
    write()
    print()
    print(table(report["results"], a.methods, cfg["categories"]))
    print(f"wrote {out} (wall {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
