"""Issue 23's levers one at a time, on one category and pose of bench/linespeed.py's run (its
fitted bank and fusion.py's data): the fit's teacher features (eager PyTorch against ONNX
Runtime), the coreset (the baseline's one pick per pass over the points against several per
pass, on one light's patches at 256 px: all of them with the baseline's k, and the region's
with this commit's), and the search (the same fitted bank exported with the region split and
with every patch searching every row, one ONNX Runtime thread, interleaved).

    .venv/bin/python bench/linespeed.py ...            # first: the fitted bank and the baseline
    .venv/bin/python bench/linespeed_levers.py [--pose fixtured --category button]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from afrd.model.checkpoint import load_checkpoint  # noqa: E402
from afrd.model.memory.coreset import greedy_coreset  # noqa: E402
from afrd.model.memory.extract import eager_features, onnx_features  # noqa: E402
from afrd.model.memory.region import part_mask, patch_region  # noqa: E402
from afrd.model.sets import normal_subset, open_sets, resize_set  # noqa: E402
from afrd.runtime.engines.onnxruntime import open_session  # noqa: E402


def _seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return round(time.perf_counter() - t0, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pose", default="fixtured")
    ap.add_argument("--category", default="button")
    ap.add_argument("--baseline", default="bcc29de")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "linespeed_levers.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = ROOT / "bench" / "out" / "linespeed"
    tree = work / f"baseline-{a.baseline}" / "afrd" / "model"  # linespeed.py extracted it
    old_path = next(p for p in (tree / "memory" / "coreset.py", tree / "coreset.py") if p.exists())
    spec = importlib.util.spec_from_file_location("baseline_coreset", old_path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    rep: dict = {"loadavg_start": os.getloadavg(), "where": f"{a.pose}/{a.category}"}
    data = ROOT / "bench" / "out" / f"fusion_cpu_{a.pose}" / "data"
    s = normal_subset(open_sets(data, "train", a.category, None, 256))
    arrays = [resize_set(s[i], 256) for i in range(len(s))]
    model, _ = load_checkpoint(work / a.pose / a.category / "ours" / "model.pt")
    model.eval()
    fast, eager = onnx_features(model), eager_features(model)
    x = torch.from_numpy(np.stack(arrays[:8]))
    fast(x), eager(x)  # warm
    rep["features_s_per_8_sets"] = {"onnxruntime": _seconds(fast, x), "eager": _seconds(eager, x)}
    feats = torch.cat(
        [fast(torch.from_numpy(np.stack(arrays[i : i + 8])))[0] for i in range(0, len(arrays), 8)]
    )[:, 0]  # the first light at 256 px: [sets, Q, D]
    region = patch_region(part_mask(arrays), model.heads[0].grid)
    k_all = round(0.1 * feats.shape[0] * feats.shape[1])
    k_region = model.heads[0].bank_size - int(model.heads[0].bg_count)
    rep["coreset_s_one_light"] = {}
    for name, pts, k in (
        ("all patches", feats.flatten(0, 1), k_all),
        ("region", feats[:, region].flatten(0, 1), k_region),
    ):
        rep["coreset_s_one_light"][name] = {
            "points": len(pts),
            "k": k,
            "one_per_pass": _seconds(old.greedy_coreset, pts, k, 0),
            "several_per_pass": _seconds(greedy_coreset, pts, k, 0),
        }
    parts = np.stack(arrays[:1])
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("region split", "every row"):
            if name == "every row":
                for h in model.heads:
                    h.set_bank(h.bank, None, 0)
            path = Path(tmp) / "m.onnx"
            x = torch.from_numpy(parts)
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["images"])
            sessions[name] = open_session(path, "cpu", threads=1)[0]
    ms: dict = {k: [] for k in sessions}
    for _ in range(a.rounds):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            session.run(None, {"images": parts})
            ms[name].append((time.perf_counter() - t0) * 1000)
    rep["search_graph_ms"] = {k: round(statistics.median(v), 1) for k, v in ms.items()}
    rep["loadavg_end"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rep, indent=1))
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
