"""Parameter count and GFLOPs per part (one image set) of each model part, for each fusion.

``python -m afrd.model.distill.profile [--teacher wide_resnet50_2] [--size 256] [--lights 6]``.
Counts run on the meta device (no weights, no compute): torch.utils.flop_counter counts
convolutions, matmuls and transposed convs (2 FLOPs per multiply-add); elementwise ops
(BN, ReLU, softmax, cosine) are not counted.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from afrd.model.distill.network import AFRD
from afrd.model.scoring import AnomalyScorer

PARTS = ("teacher", "fusion", "bottleneck", "decoder")


def profile(teacher: str, fusion: str, n_lights: int, size: int) -> dict:
    with torch.device("meta"):
        model = AFRD(teacher, fusion, n_lights, size, teacher_weights="random")
        scorer = AnomalyScorer(size, model.views)
        x = torch.empty(1, n_lights, 3, size, size)
    params = {p: sum(t.numel() for t in getattr(model, p).parameters()) for p in PARTS}
    params["light_embed"] = model.light_embed.numel() if model.views > 1 else 0
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        t, s = model(x)
        scorer(t, s)
    counts = counter.get_flop_counts()
    flops = {p: sum(counts.get(f"AFRD.{p}", {}).values()) for p in PARTS}
    flops["scoring"] = counter.get_total_flops() - sum(counts.get("AFRD", {}).values())
    return {
        "teacher": teacher,
        "fusion": fusion,
        "lights": n_lights,
        "size": size,
        "params_M": {k: v / 1e6 for k, v in params.items()},
        "params_total_M": sum(params.values()) / 1e6,
        "trainable_M": (sum(params.values()) - params["teacher"]) / 1e6,
        "gflops": {k: v / 1e9 for k, v in flops.items()},
        "gflops_total": counter.get_total_flops() / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m afrd.model.distill.profile", description=__doc__)
    ap.add_argument("--teacher", default="wide_resnet50_2")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lights", type=int, default=6)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    rows = [
        profile(a.teacher, f, a.lights, a.size)
        for f in ("attention", "attention-pooled", "mean", "single:0", "restore-max")
    ]
    print(f"{a.teacher}, {a.lights} lights at {a.size}x{a.size}, per part (one image set)\n")
    print(
        "| fusion | params teacher / fusion / bottleneck / decoder (M) | trainable (M) "
        "| GFLOPs teacher / fusion / bottleneck / decoder / scoring | GFLOPs total |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        p, g = r["params_M"], r["gflops"]
        dec = p["decoder"] + p["light_embed"]
        print(
            f"| {r['fusion']} | {p['teacher']:.1f} / {p['fusion']:.2f} / {p['bottleneck']:.1f}"
            f" / {dec:.1f} | {r['trainable_M']:.1f} | {g['teacher']:.1f} / {g['fusion']:.3f} / "
            f"{g['bottleneck']:.2f} / {g['decoder']:.1f} / {g['scoring']:.3f} | "
            f"{r['gflops_total']:.1f} |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
