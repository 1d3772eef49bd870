"""Fusion benchmark: which detector should a cell run, and does fusing six lights pay?

One command renders (or reads) the data, then trains, evaluates, exports and times every method
with the same seed and data, at one or more part poses: RD on each single light
(``single:0..5``), ``mean``, ``attention`` (the paper's FC), ``restore-max`` (the student
restores every light's features; the map is the maximum over lights), optionally
``attention-pooled``, the multi-light memory bank (``memory``, ``afrd train --model memory``) and
``preset`` (exactly ``afrd train --preset cpu``, which is the memory bank: the row repeats
``memory``'s; ``preset+global`` fuses that bank with bench/logical.py's global branches, issue
27: no P-AUROC, no ORT). Every run goes through ``afrd train``'s own command line: the AFRD rows
on the ``afrd-cpu`` preset (``--fusion`` changed), the bank on ``cpu``; then ``afrd eval``'s
function; each method's first model per pose is exported with ``afrd-export onnx``'s function and
timed in ONNX Runtime on one CPU thread. One model per category and method (Eyecandies protocol).
Writes ``bench/out/fusion.json`` after every run (``--resume`` skips finished runs) and prints a
table per pose: I-AUROC, P-AUROC, AUPRO, train seconds, ORT ms per part.

Budget (``--config cpu``): every method at all three poses was to fit about 40 minutes on one
torch thread of this 2-core box. Measured on one category (fixtured button, box shared with
other jobs at load 5-6): a single-light RD run costs ~35 s at 96 steps (train + eval), a
six-light fusion ~50 s (restore-max ~110 s), an export plus ORT timing ~35 s (once per method:
single lights share one). So the AFRD comparison rows are cut to ``BENCH_STEPS`` = 64 optimiser
steps (the learning curve shows them ~0.06 I-AUROC short of the 512 steps the ``afrd-cpu`` preset
trains; ``preset`` is the preset as a user gets it), with 64 training, 32 held-out normal and
48 test sets per category. Parts are rendered at 256 px (the ``cpu`` preset's input; the AFRD
rows resize to 128 px as their preset does). Even so a full run takes about three hours of one
thread on this box (the bank at 256 + 128 px costs ~4 minutes a category to build and evaluate);
the default order (memory, preset, fusions, then single lights) answers the decision first, and
two invocations with different ``--methods`` and ``--out`` can share the rendered data on two
cores (``--merge`` then prints the tables of both).

    .venv/bin/python bench/fusion.py --threads 1                       # cpu, all poses
    .venv/bin/python bench/fusion.py --threads 1 --pose fixtured --methods single:5 memory
    .venv/bin/python bench/fusion.py --config paper --data /data/eyecandies --pose free \\
        --teacher-weights wide_resnet50_2-95faca4d.pth                 # GPU: the paper's run
    .venv/bin/python bench/fusion.py --quick                           # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from afrd.data.lights import DEFAULT_LIGHTS  # noqa: E402
from afrd.data.render import CATEGORIES  # noqa: E402
from afrd.errors import AfrdError  # noqa: E402

SINGLES = tuple(f"single:{k}" for k in range(len(DEFAULT_LIGHTS)))
# the memory bank on one light (its bank, normalisation and score on that light alone)
MEMORY_SINGLES = tuple(f"memory-single:{k}" for k in range(len(DEFAULT_LIGHTS)))
METHODS = (*SINGLES, "mean", "attention", "attention-pooled", "restore-max", "memory", "preset")
# the preset's bank fused with bench/logical.py's global branches (issue 27), as it fuses them
GLOBAL = "preset+global"
METHODS += (*MEMORY_SINGLES, GLOBAL)
POSES = ("fixtured", "conveyor", "free")
# the decision first (a run cut short still answers it), then the baselines
DEFAULT_METHODS = ("memory", "preset", "attention", "mean", "restore-max", *SINGLES)
BENCH_STEPS = 64  # AFRD rows at the cpu config: see the module docstring

CONFIGS: dict[str, dict] = {
    "cpu": {
        "preset": "cpu",  # the memory bank: the `memory` and `preset` rows
        "afrd_preset": "afrd-cpu",  # the AFRD rows (fusions, single lights)
        "steps": BENCH_STEPS,
        "render_size": 256,  # the preset's input; the AFRD rows resize to image_size
        "image_size": 128,
        "train": 64,
        "val": 32,
        "test": 48,
        "categories": list(CATEGORIES),
        "defect_rate": 0.5,
    },
    # The paper's setting, for a GPU machine (ImageNet WRN50-2 weights from a local file).
    "paper": {
        "preset": "paper",
        "afrd_preset": "paper",
        "steps": None,  # the preset's 100 epochs
        "render_size": 256,
        "image_size": 256,
        "train": 200,
        "val": 20,
        "test": 100,
        "categories": list(CATEGORIES),
        "defect_rate": 0.5,
    },
    "quick": {
        "preset": "cpu",
        "afrd_preset": "afrd-cpu",
        "steps": 1,
        "render_size": 64,
        "image_size": 64,
        "bank_image_size": 64,  # the bank rows' --image-size (default: the preset's)
        "train": 4,
        "val": 4,
        "test": 6,
        "categories": list(CATEGORIES[:2]),
        "defect_rate": 0.5,
    },
}
ORT_PARTS = 5  # parts timed one at a time per exported model (after 2 warm-up runs)


def method_label(method: str) -> str:
    if method.startswith("single:"):
        return f"RD {DEFAULT_LIGHTS[int(method.split(':')[1])]}"
    if method.startswith("memory-single:"):
        return f"bank {DEFAULT_LIGHTS[int(method.split(':')[1])]}"
    return {"preset": "preset cpu", "memory": "memory bank"}.get(method, method)


def ensure_data(root: Path, cfg: dict, seed: int) -> Path:
    """Render the synthetic set once per (config, seed, pose); reuse it if the stamp matches."""
    from afrd.data.synth_cli import synth

    keys = ("render_size", "train", "val", "test", "categories", "defect_rate", "pose")
    stamp = {k: cfg[k] for k in keys}
    stamp["seed"] = seed
    stamp_file = root / "stamp.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return root
    synth(
        root,
        cfg["categories"],
        cfg["train"],
        cfg["val"],
        cfg["test"],
        cfg["render_size"],
        seed,
        cfg["defect_rate"],
        progress=False,
        pose=cfg["pose"],
    )
    stamp_file.write_text(json.dumps(stamp))
    return root


def train_args(method: str, cfg: dict, data: Path, cat: str, out: Path, a) -> list[str]:
    """``afrd train`` arguments for one run: the config's preset, changed only where the method
    differs (``preset`` changes nothing)."""
    bank = method in ("memory", "preset", GLOBAL) or method.startswith("memory-single:")
    preset = cfg["preset"] if bank else cfg["afrd_preset"]
    args = ["--data", str(data), "--category", cat, "--out", str(out), "--preset", preset]
    args += ["--seed", str(a.seed), "--device", a.device, "--no-progress"]
    if a.teacher_weights:
        args += ["--teacher-weights", a.teacher_weights]
    if a.register:
        args += ["--register", a.register]
    if bank and cfg.get("bank_image_size"):
        args += ["--image-size", str(cfg["bank_image_size"])]
    if method == "memory":
        return [*args, "--model", "memory"]
    if method.startswith("memory-single:"):
        # one light alone may not show the part's outline well enough to register every part
        # (a dim ring segment): the single-light rows go unregistered unless --register says
        light = DEFAULT_LIGHTS[int(method.split(":")[1])]
        args += [] if a.register else ["--register", "none"]
        return [*args, "--model", "memory", "--lights", light]
    if method != "preset":
        args += ["--model", "afrd"] if a.has_model_flag else []
        args += ["--fusion", method, "--image-size", str(cfg["image_size"])]
        if cfg["steps"] is not None:
            args += ["--steps", str(cfg["steps"])]
    return args


def ort_ms(ckpt: Path, bundle_dir: Path, data: Path, cat: str) -> dict:
    """Export ``ckpt`` (parity-checked) and time ONNX Runtime on one CPU thread, one part per
    call, on real test parts: median and max ms per part."""
    from afrd.export.onnx_export import export_onnx
    from afrd.model.sets import open_sets
    from afrd.runtime.engines import create_engine

    bundle = export_onnx(ckpt, bundle_dir, force=True, echo=False)
    sets = open_sets(data, "test_public", cat, bundle.lights)
    engine = create_engine("onnxruntime", bundle, device="cpu", threads=1)
    engine.warmup(2)
    times = []
    for i in range(min(ORT_PARTS, len(sets))):
        engine.infer(sets[i].images)
        times.append(engine.last_timings["total_ms"])
    engine.close()
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def ort_key(method: str) -> str:
    """Single-light graphs differ only in which light they slice: one timing serves all six."""
    for prefix in ("single:", "memory-single:"):
        if method.startswith(prefix):
            return prefix[:-1]
    return method


def fmt(v) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def table(res: dict, categories: list[str], methods: list[str], ort: dict) -> str:
    head = (
        f"{'method':<16}"
        + "".join(f"{c[:8]:>9}" for c in categories)
        + f"{'I-AUROC':>9}{'P-AUROC':>9}{'AUPRO':>8}{'train s':>9}{'ORT ms':>8}"
    )
    lines = ["I-AUROC per category, then means over categories", head, "-" * len(head)]
    for m in methods:
        r = res.get(m)
        if not r or not r.get("categories"):
            if r and r.get("error"):
                lines.append(f"{method_label(m):<16}{r['error']}")
            continue
        cats = r["categories"]
        cells = "".join(f"{fmt(cats[c]['i_auroc']) if c in cats else '-':>9}" for c in categories)
        mean = r["mean"]
        ms = ort.get(ort_key(m), {}).get("median_ms")
        lines.append(
            f"{method_label(m):<16}{cells}{fmt(mean['i_auroc']):>9}{fmt(mean['p_auroc']):>9}"
            f"{fmt(mean['aupro']):>8}{mean['train_s']:>9.0f}"
            f"{'-' if ms is None else f'{ms:.0f}':>8}"
        )
    return "\n".join(lines)


def run_method(method: str, pose: str, cfg: dict, a, report: dict, write) -> None:
    """Train, evaluate (and, once per method, export and time) ``method`` at ``pose`` for every
    category not yet in the report."""
    from afrd.model.evaluate import evaluate
    from afrd.model.presets import get_preset
    from afrd.model.train import main as train_main

    work = Path(a.out).parent / f"fusion_{report['config']}_{pose}"
    data = Path(a.data) if a.data else work / "data"
    pres = report["results"].setdefault(pose, {})
    if method == "preset" and get_preset(cfg["preset"]).model == "memory" and "memory" in pres:
        pres["preset"] = {**pres["memory"], "alias_of": "memory"}  # the very same command
        write()
        return
    res = pres.setdefault(method, {"categories": {}})
    for cat in cfg["categories"]:
        if cat in res["categories"] or res.get("error"):
            continue
        run_dir = work / "runs" / method.replace(":", "_") / cat
        log = io.StringIO()
        t0 = time.perf_counter()
        reuse = method == GLOBAL and cat in pres.get("preset", {}).get("categories", {})
        if reuse:  # the very command `preset` ran: its bank from this run serves
            run_dir = work / "runs" / pres["preset"].get("alias_of", "preset") / cat
        try:
            with contextlib.redirect_stdout(log):
                rc = 0 if reuse else train_main(train_args(method, cfg, data, cat, run_dir, a))
        except SystemExit as e:  # argparse: e.g. no --model memory in this checkout
            rc = e.code
        except AfrdError as e:  # e.g. a training set that does not register: this row only
            rc = f"with an error ({e})"
        if rc != 0:
            res["error"] = f"afrd train exited {rc}: {log.getvalue().strip()[-200:]}"
            print(f"{method_label(method)}: {res['error']}", flush=True)
            write()
            return
        t1 = time.perf_counter()
        ckpt = run_dir / "model.pt"
        if method == GLOBAL:
            from bench.logical import structural_eval

            dump = Path(a.dump_scores) if a.dump_scores else None
            c = structural_eval(ckpt, data, cat, pose, a.seed, dump)
        else:
            r = evaluate(ckpt, data, [cat], run_dir / "eval", "test_public", device=a.device)
            c = r["categories"][cat]
        res["categories"][cat] = {
            "i_auroc": c["i_auroc"],
            "p_auroc": c["p_auroc"],
            "aupro": c.get("aupro"),
            "test_sets": c["sets"],
            "defective": c["defective"],
            "train_s": round(t1 - t0, 1),
            "eval_s": round(time.perf_counter() - t1, 1),
            "train_log": [ln for ln in log.getvalue().splitlines() if ln.startswith("afrd train")],
            **({"bank_i_auroc": c["bank_i_auroc"]} if method == GLOBAL else {}),
        }
        ort, key = report["ort"], ort_key(method)
        # the same graph at every pose: time once (the global branches are in no graph yet)
        if key not in ort and not a.no_ort and method != GLOBAL:
            t2 = time.perf_counter()
            try:
                ort[key] = ort_ms(ckpt, run_dir / "bundle", data, cat)
            except AfrdError as e:  # recorded, not fatal: the metrics still count
                ort[key] = {"median_ms": None, "error": f"{type(e).__name__}: {e}"[:300]}
            ort[key]["export_and_time_s"] = round(time.perf_counter() - t2, 1)
        vals = list(res["categories"].values())
        res["mean"] = {k: _mean([x[k] for x in vals]) for k in ("i_auroc", "p_auroc", "aupro")}
        res["mean"]["train_s"] = _mean([x["train_s"] for x in vals])
        write()
        print(
            f"[{report['wall_s']:6.0f}s] {pose:<9} {method_label(method):<14} {cat:<8} "
            f"I {fmt(c['i_auroc'])} P {fmt(c['p_auroc'])} PRO {fmt(c.get('aupro'))} "
            f"(train {t1 - t0:.0f}s)",
            flush=True,
        )


def merge(report: dict, files: list[str], cfg: dict, seed: int) -> None:
    """Results and ORT timings of ``files`` into ``report``; SystemExit naming a file whose
    settings or seed are not this run's (its numbers would not be comparable)."""
    for f in files:
        old = json.loads(Path(f).read_text())
        if old.get("settings") != cfg or old.get("seed") != seed:
            raise SystemExit(f"--merge {f}: its settings or seed are not this run's")
        for pose, res in old.get("results", {}).items():
            report["results"].setdefault(pose, {}).update(res)
        report["ort"].update(old.get("ort", {}))
        entry = {"file": f, "command": old.get("command"), "wall_s": old.get("wall_s")}
        report.setdefault("merged", []).append(entry)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=["cpu", "paper"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 categories, 64 px, 1 epoch")
    ap.add_argument("--data", default=None, help="Eyecandies-layout root (default: render)")
    ap.add_argument("--pose", nargs="+", choices=POSES, default=list(POSES))
    ap.add_argument("--categories", nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    ap.add_argument("--steps", type=int, default=None, help="AFRD rows' optimiser steps")
    ap.add_argument("--no-ort", action="store_true", help="skip export and ORT timing")
    ap.add_argument(
        "--register", default=None, help="afrd train --register for every row (default: preset's)"
    )
    ap.add_argument("--teacher-weights", default=None, help="local ImageNet weights file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "fusion.json"))
    ap.add_argument("--resume", action="store_true", help="skip runs already in --out")
    ap.add_argument(
        "--dump-scores",
        metavar="DIR",
        help=f"{GLOBAL}: write per-part component scores (bank, branches; val and test, with "
        "labels and defects) to DIR/<pose>_<category>.json, for fusion rules compared offline",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="run nothing: join the results of earlier runs (same config and seed) into --out "
        "and print their tables",
    )
    a = ap.parse_args(argv)

    import torch

    from afrd.model.train import build_parser

    a.has_model_flag = "--model" in build_parser().format_help()
    if a.threads:
        torch.set_num_threads(a.threads)
    name = "quick" if a.quick else a.config
    cfg = dict(CONFIGS[name])
    for key, val in (("steps", a.steps), ("categories", a.categories), ("register", a.register)):
        if val is not None:
            cfg[key] = val
    out_json = Path(a.out)
    report = {
        "config": name,
        "settings": cfg,
        "seed": a.seed,
        "data": a.data or "rendered",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "results": {},
        "ort": {},  # method -> ORT CPU ms per part (1 thread), timed on its first model
        "wall_s": 0.0,
    }
    if a.resume and out_json.is_file():
        old = json.loads(out_json.read_text())
        if old.get("settings") == cfg and old.get("seed") == a.seed:
            report["results"] = old.get("results", {})
            report["ort"] = old.get("ort", {})
            for pose in report["results"].values():  # retry methods that could not run
                for r in pose.values():
                    r.pop("error", None)
    t_all = time.perf_counter()

    def write() -> None:
        report["wall_s"] = round(time.perf_counter() - t_all, 1)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(report, indent=1))

    todo = list(a.methods)
    if a.merge:
        merge(report, a.merge, cfg, a.seed)
        present = {m for res in report["results"].values() for m in res}
        a.methods = [m for m in (*DEFAULT_METHODS, *METHODS) if m in present]
        a.methods = list(dict.fromkeys(a.methods))
        todo = []
    if not a.data and todo:
        for pose in a.pose:
            work = out_json.parent / f"fusion_{name}_{pose}"
            ensure_data(work / "data", {**cfg, "pose": pose}, a.seed)
    # method-major: a run cut short has every pose for the methods it finished
    for method in todo:
        for pose in a.pose:
            run_method(method, pose, cfg, a, report, write)
    for pose in a.pose:
        res = report["results"].get(pose, {})
        print(f"\n{pose}:\n{table(res, cfg['categories'], a.methods, report['ort'])}")
        for kind, prefix in (("best_single", "single:"), ("best_bank_single", "memory-single:")):
            singles = {
                m: r["mean"]["i_auroc"]
                for m, r in res.items()
                if m.startswith(prefix) and r.get("mean")
            }
            if singles:
                best = max(singles, key=singles.get)
                report.setdefault(kind, {})[pose] = {"method": best, "i_auroc": singles[best]}
                print(f"{pose}: best single light {method_label(best)} I-AUROC {singles[best]:.3f}")
    write()
    print(f"wrote {out_json} (wall {report['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
