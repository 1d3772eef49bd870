"""CAD benchmark: does the global student (GCCB + contextual affinity) catch logical defects?

Same run, same seed, same rendered sets: AFRD at the ``afrd-cpu`` preset's settings
(EfficientNet-Lite0 ImageNet teacher, attention fusion, 128 px, AdamW 2e-3, batch 8, cached
teacher maps) trained with ``--student local+global`` (afrd.model.cad), then scored four ways:

- ``local``: the local student's map alone. CAD's global student reads the fused teacher maps
  detached and has its own bottleneck, so the local student trains exactly as ``--student
  local`` does (tests/test_model_cad.py checks the weights are equal after training); this row
  *is* the local-only model. ``--separate-local`` also trains it on its own and reports the
  largest score difference, as a check in the bench itself.
- ``global``: the affinity map alone; ``sum`` (the paper's combination) and ``max``: both maps,
  each z-scored per pixel on held-out normals.

Test sets per category: the same good parts, plus structural defects (geometric, albedo, gloss
in turn) and logical defects (every kind the category can show, afrd.data.logical, in turn).
Parts are ``fixtured`` (held in a nest), as an inline cell images them; ``--pose conveyor``
renders them loose on a belt (about +-20 deg, +-4 % shift), where a component's place on the
image says less and only its place relative to the others is wrong. Writes
``bench/out/cad.json`` (with every epoch's loss: the learning curve) and prints a table.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/cad.py --threads 1
    .venv/bin/python bench/cad.py --merge bench/out/cad_a.json bench/out/cad_b.json  # join halves
    .venv/bin/python bench/cad.py --quick          # smoke run (tiny, minutes)
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

from afrd.data.logical import LOGICAL_FOR  # noqa: E402
from afrd.data.render import CATEGORIES, POSES, render_set, sample_part  # noqa: E402
from afrd.data.synth_cli import sample_seed  # noqa: E402
from afrd.model.cad.inference import CADInference  # noqa: E402
from afrd.model.checkpoint import load_checkpoint  # noqa: E402
from afrd.model.inference import InferenceModel  # noqa: E402
from afrd.model.metrics import auroc  # noqa: E402
from afrd.model.sets import resize_set  # noqa: E402
from afrd.model.train import TrainConfig, train  # noqa: E402

STRUCTURAL = ("geometric", "albedo", "gloss")
SCORINGS = ("local", "global", "sum", "max")
CONFIGS = {
    "cpu": {"size": 128, "steps": 256, "train": 64, "val": 32, "good": 24, "bad": 24},
    "quick": {"size": 64, "steps": 8, "train": 8, "val": 4, "good": 6, "bad": 6},
}


def render(
    cat: str, split: str, i: int, defect: str | None, size: int, seed: int, pose: str = "fixtured"
):
    s = sample_seed(seed, cat, split, i)
    part = sample_part(cat, s, defect, min(512, 2 * size), pose)
    return render_set(part, rng=np.random.default_rng(s ^ 0x5EED), size=size)


def category_sets(cat: str, cfg: dict, seed: int, pose: str = "fixtured") -> dict:
    size = cfg["size"]
    logical = LOGICAL_FOR[cat]

    def sets(split: str, n: int, first: int = 0, defects: tuple = (None,)) -> list:
        return [
            render(cat, split, first + i, defects[i % len(defects)], size, seed, pose)
            for i in range(n)
        ]

    return {
        "train": sets("train", cfg["train"]),
        "val": sets("val", cfg["val"]),
        "good": sets("test_public", cfg["good"]),
        "structural": sets("test_public", cfg["bad"], 1000, STRUCTURAL),
        "logical": sets("test_public", cfg["bad"], 2000, logical),
    }


@torch.no_grad()
def scores(module: torch.nn.Module, sets: list, size: int) -> tuple[np.ndarray, float]:
    """Scores and CPU milliseconds per part (batch 8)."""
    out, t = [], 0.0
    for i in range(0, len(sets), 8):
        x = torch.from_numpy(np.stack([resize_set(s, size) for s in sets[i : i + 8]]))
        t0 = time.process_time()
        out.append(module(x)[1].numpy())
        t += time.process_time() - t0
    return np.concatenate(out), 1000 * t / len(sets)


def afrd_cpu_settings(
    cat: str, size: int, steps: int, seed: int, teacher_weights: str | None = None
) -> dict:
    """TrainConfig keywords of the ``afrd-cpu`` AFRD every CAD row trains with (cached teacher
    maps in RAM, no progress bar); bench/logical_others.py trains CAD the same way."""
    base = {
        "teacher": "efficientnet_lite0",
        "fusion": "attention",
        "loss": "pixel",
        "image_size": size,
        "lr": 2e-3,
        "batch_size": 8,
        "steps": steps,
        "feature_cache": "ram",
        "seed": seed,
        "progress": False,
        "category": cat,
    }
    if teacher_weights:
        base["teacher_weights"] = teacher_weights
    return base


def run_category(cat: str, cfg: dict, a, out: Path) -> dict:
    t0 = time.perf_counter()
    data = category_sets(cat, cfg, a.seed, a.pose)
    render_s = time.perf_counter() - t0
    base = afrd_cpu_settings(cat, cfg["size"], cfg["steps"], a.seed, a.teacher_weights)
    cad = {"affinity_weight": a.affinity_weight, "affinity_scales": tuple(a.affinity_scales)}
    t0 = time.perf_counter()
    ckpt = train(
        TrainConfig(**base, out=str(out / cat / "cad"), student="local+global", extra={"cad": cad}),
        sets=data["train"],
        norm_sets=data["val"],
    )
    train_s = time.perf_counter() - t0
    model, config = load_checkpoint(ckpt)
    labels = np.r_[np.zeros(len(data["good"])), np.ones(len(data["structural"]))]
    row: dict = {"train_s": round(train_s, 1), "render_s": round(render_s, 1)}
    for how in SCORINGS:
        part = how if how in ("local", "global") else "both"
        module = CADInference(model, combine="max" if how == "max" else "sum", part=part)
        good, ms = scores(module, data["good"], cfg["size"])
        st, _ = scores(module, data["structural"], cfg["size"])
        lo, _ = scores(module, data["logical"], cfg["size"])
        row[how] = {
            "structural": auroc(labels, np.r_[good, st]),
            "logical": auroc(labels, np.r_[good, lo]),
            "ms_per_part": round(ms, 2),
        }
    # what a local-only bundle computes: the local student's InferenceModel
    _, row["local_only_ms_per_part"] = scores(InferenceModel(model), data["good"], cfg["size"])
    row["history"] = [round(h["loss"], 5) for h in model_history(ckpt)]
    if a.separate_local:
        t0 = time.perf_counter()
        ckpt_l = train(
            TrainConfig(**base, out=str(out / cat / "local"), student="local"),
            sets=data["train"],
            norm_sets=data["val"],
        )
        local, _ = load_checkpoint(ckpt_l)
        sep, _ = scores(InferenceModel(local), data["logical"], cfg["size"])
        via, _ = scores(CADInference(model, part="local"), data["logical"], cfg["size"])
        row["separate_local"] = {
            "train_s": round(time.perf_counter() - t0, 1),
            "max_abs_score_diff": float(np.abs(sep - via).max()),
        }
    return row


def model_history(ckpt: Path) -> list:
    from afrd.model.checkpoint import read_checkpoint

    return list(read_checkpoint(ckpt).get("history", []))


def table(res: dict) -> str:
    head = f"{'category':<9}" + "".join(f" {h + ' S':>9} {h + ' L':>9}" for h in SCORINGS)
    rows = [head + f" {'train s':>8}"]
    cats = [c for c in res["categories"]]
    for cat in [*cats, "mean"]:
        if cat == "mean":
            vals = {
                h: {
                    k: float(np.mean([res["categories"][c][h][k] for c in cats]))
                    for k in ("structural", "logical")
                }
                for h in SCORINGS
            }
            res["mean"] = vals
            tail = ""
        else:
            vals = res["categories"][cat]
            tail = f" {vals['train_s']:>8.0f}"
        rows.append(
            f"{cat:<9}"
            + "".join(
                f" {vals[h]['structural']:>9.3f} {vals[h]['logical']:>9.3f}" for h in SCORINGS
            )
            + tail
        )
    m = res["mean"]
    for h in ("sum", "max"):
        rows.append(
            f"{h} vs local: logical {m[h]['logical'] - m['local']['logical']:+.3f}, "
            f"structural {m[h]['structural'] - m['local']['structural']:+.3f}"
        )
    return "\n".join(rows)


def mean_se(values) -> tuple[float, float]:
    """Mean and its standard error over seeds (0 for a single value)."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def merge(paths: list[str], out: Path) -> int:
    """Join runs made with the same settings: runs of one seed (disjoint categories, one process
    per core) into that seed's table; several seeds into each seed's table plus, per scoring,
    the mean and standard error over seeds of its difference to the local student's mean."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    for p, r in zip(paths, runs, strict=True):
        same = ("config", "cad")
        if any(r[k] != runs[0][k] for k in same) or r.get("pose", "fixtured") != runs[0].get(
            "pose", "fixtured"
        ):
            raise SystemExit(f"--merge: {p} has other settings than {paths[0]}")
    seeds: dict[int, dict] = {}
    for p, r in zip(paths, runs, strict=True):
        res = seeds.setdefault(r["seed"], {**r, "categories": {}, "files": []})
        if set(r["categories"]) & set(res["categories"]):
            raise SystemExit(f"--merge: {p} repeats seed {r['seed']}'s {set(r['categories'])}")
        res["categories"].update(r["categories"])
        res["files"].append(p)
    for seed, res in sorted(seeds.items()):
        print(f"seed {seed}\n{table(res)}")
    cats = [set(r["categories"]) for r in seeds.values()]
    summary: dict = {"seeds": sorted(seeds), "per_seed": seeds}
    if len(seeds) > 1 and all(c == cats[0] for c in cats):
        for how in SCORINGS[1:]:
            for fam in ("structural", "logical"):
                d = [r["mean"][how][fam] - r["mean"]["local"][fam] for r in seeds.values()]
                m, se = mean_se(d)
                summary.setdefault("delta_vs_local", {}).setdefault(how, {})[fam] = [m, se]
                print(f"{how} - local, {fam}: {m:+.3f} +- {se:.3f} over {len(d)} seeds")
    out.write_text(json.dumps(summary if len(seeds) > 1 else next(iter(seeds.values())), indent=2))
    print(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=list(CONFIGS), default="cpu")
    ap.add_argument("--quick", action="store_true", help="= --config quick")
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default: config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pose", choices=list(POSES), default="fixtured", help="how parts lie")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher-weights", default=None, help="default: the Lite0 package's")
    ap.add_argument("--separate-local", action="store_true", help="also train --student local")
    ap.add_argument("--affinity-weight", type=float, default=1.0, help="CAD's (default 1)")
    ap.add_argument("--affinity-scales", type=int, nargs="+", default=[1, 2], help="of 0 1 2")
    ap.add_argument("--tag", default="", help="cad<tag>.json: variants beside the main run")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="join runs: halves, seeds")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = ap.parse_args()
    if a.merge:
        return merge(a.merge, Path(a.out) / f"cad_merged{a.tag}.json")
    torch.set_num_threads(a.threads)
    cfg = dict(CONFIGS["quick" if a.quick else a.config])
    if a.steps:
        cfg["steps"] = a.steps
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {
        "config": cfg,
        "seed": a.seed,
        "threads": a.threads,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "categories": {},
    }
    path = out / (f"cad_quick{a.tag}.json" if a.quick else f"cad{a.tag}.json")
    res["cad"] = {"affinity_weight": a.affinity_weight, "affinity_scales": a.affinity_scales}
    res["pose"] = a.pose
    for cat in a.categories:
        res["categories"][cat] = run_category(cat, cfg, a, out / f"cad_runs{a.tag}")
        path.write_text(json.dumps(res, indent=2))
        print(cat, json.dumps({k: v for k, v in res["categories"][cat].items() if k != "history"}))
    print(table(res))
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
