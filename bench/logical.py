"""Logical-defect benchmark (issue 27): the control and the global branches, in one run.

Data: the logical family no local model can see (afrd.data.logical_family; ``afrd synth
--logical family``): plates with painted studs whose defects (count, pairing, layout) live only
in relations between far-apart studs. Per pose and seed: train and val splits rendered to disk
by ``synth``; the test parts (good, and each kind in equal numbers) rendered in memory from the
test split's seeds.

Methods, on the same data and the same teacher features:

- ``bank`` (the control): exactly ``afrd train --preset cpu`` (the position-agnostic memory
  bank, 256 + 128 px, registration auto), scored by its own module; it must stay near chance.
- ``position``: per-position Gaussians of the bank's patch features (PaDiM-like,
  afrd.model.globalstats.PositionStats) on the registered parts.
- ``histogram``: soft counts of rare prototypes per image half, nearest training part
  (afrd.model.globalstats.PartHistogram); ``--restarts N`` averages N k-means seeds' scores
  (each z-normalised on val): the prototypes that come out rare depend on the seed.
- ``bank+...``: the bank's score and each branch's normalised on the held-out normals (the
  val split: median and MAD, ``globalstats.robust_norm``; the branches less
  ``BranchSettings.margin``) and fused by a maximum (the image score is the map's maximum, so
  this is the max of the normalised maps). Both branches and their normalisation are
  afrd.model.globalstats.GlobalBranches, the code the ``logical`` preset's graph runs.
- ``--preset-row``: ``afrd train --preset logical`` on the same data, exported (afrd-export
  onnx) and scored on ONNX Runtime, beside the cpu bank's export on ONNX Runtime (ms a part,
  one thread): the preset as it ships, which should read as the ``bank+position+histogram``
  row at the preset's settings (globalstats.BranchSettings).

Settings of the branches (prototypes, rare share, shrinkage) are chosen on ``--select-seed`` by the mean
logical I-AUROC of bank+position+histogram and reported on ``--seeds`` (fresh data): mean and
standard error over seeds. Sizes (``cpu``): 48 train, 16 val, 24 good and 12 per kind per
seed, rendered at 256 px: minutes per seed on one thread. ``--others`` adds CAD as built
(local, global student, their sum) and an EfficientAD-style autoencoder on the bank's features,
alone and fused with the bank (bench/logical_others.py), on the same parts. Writes
``bench/out/logical.json``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/logical.py --threads 1 --restarts 4 --seeds 4 5 6
    .venv/bin/python bench/logical.py --quick          # smoke run
    # per-part component scores (bank, each branch; val and test) for offline fusion rules:
    OMP_NUM_THREADS=1 .venv/bin/python bench/logical.py --threads 1 --restarts 4 --seeds-only \
        --seeds 0 7 8 --dump-scores /tmp/scores
    # the logical preset as it ships (exported, ONNX Runtime) beside the bank, its settings:
    .venv/bin/python bench/logical.py --threads 1 --restarts 4 --seeds-only --preset-row
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from afrd.data.logical_family import KINDS, sample_family_part  # noqa: E402
from afrd.data.render import render_set  # noqa: E402
from afrd.data.synth_cli import sample_seed, synth  # noqa: E402
from afrd.model.checkpoint import load_checkpoint, registration_of  # noqa: E402
from afrd.model.globalstats import (  # noqa: E402
    MARGIN,
    BranchSettings,
    GlobalBranches,
    robust_norm,
)
from afrd.model.metrics import auroc  # noqa: E402
from afrd.model.sets import open_sets, registered, resize_set  # noqa: E402
from afrd.model.train import main as train_main  # noqa: E402

CAT = "plate"
# cad: CAD's optimiser steps with --others (bench/cad.py's cpu config; quick: a smoke run)
CONFIGS = {
    "cpu": {"size": 256, "train": 48, "val": 16, "good": 24, "bad": 12, "image_size": None,
            "cad": 256},
    "quick": {"size": 64, "train": 8, "val": 6, "good": 6, "bad": 3, "image_size": 64, "cad": 4},
}  # fmt: skip
# branch settings chosen on the select seed: prototypes, rare share, covariance shrinkage
GRID = {"k": (16, 32, 64), "rare": (0.01, 0.02), "shrink": (0.01, 0.1)}
# what run 2 (--restarts 4) chose on seed 0 (BENCHMARKS.md); `free` was not run: conveyor's
CHOSEN = {"fixtured": (32, 0.01, 0.1), "conveyor": (16, 0.01, 0.01), "free": (16, 0.01, 0.01)}
CHOSEN_RESTARTS = 4


def render_test(seed: int, pose: str, cfg: dict) -> tuple[list, list]:
    """Good parts and ``bad`` of each kind, from the test split's seeds; (sets, kinds)."""
    sets, kinds = [], []
    plan = [(None, i) for i in range(cfg["good"])]
    plan += [(k, 1000 * (j + 1) + i) for j, k in enumerate(KINDS) for i in range(cfg["bad"])]
    for kind, i in plan:
        s = sample_seed(seed, CAT, "test_public", i)
        part = sample_family_part(CAT, s, kind, min(512, 2 * cfg["size"]), pose)
        sets.append(render_set(part, rng=np.random.default_rng(s ^ 0x5EED), size=cfg["size"]))
        kinds.append(kind or "good")
    return sets, kinds


@torch.no_grad()
def run_model(model, arrays: list, batch: int = 8, score: bool = True) -> tuple:
    """(bank scores, patch features at the bank's finest scale, bank CPU ms per part);
    ``score=False``: features only, scores None (a training split's are not used)."""
    scores, feats, t = [], [], 0.0
    for i in range(0, len(arrays), batch):
        x = torch.from_numpy(np.stack(arrays[i : i + batch]))
        if score:
            t0 = time.process_time()
            scores.append(model(x)[1].numpy())
            t += time.process_time() - t0
        feats.append(model.patches(x, 0))
    return (np.concatenate(scores) if score else None), torch.cat(feats), 1000 * t / len(arrays)


@torch.no_grad()
def branch_scores(
    tr_f, va_f, te_f, setting: tuple, restarts: int, seed: int, margin: float = MARGIN
) -> tuple:
    """Position and histogram fitted on ``tr_f``, normalised on ``va_f``: (branches, (val,
    test) pairs of normalised scores, less the margin, for position, then histogram)."""
    k, rare, shrink = setting
    br = GlobalBranches(
        ("position", "histogram"), BranchSettings(k, rare, shrink, restarts, margin)
    )
    br.fit(tr_f, va_f, seed)
    sv, st = br(va_f)[1].numpy(), br(te_f)[1].numpy()
    return br, (sv[:, 0], st[:, 0]), (sv[:, 1], st[:, 1])


def fuse(bank: tuple[np.ndarray, np.ndarray], *branches: tuple[np.ndarray, np.ndarray]):
    """The fused test score, as BankWithBranches fuses it: the bank's (val, test) scores
    normalised on val by ``robust_norm``, the maximum of it and the branches' test scores
    (already normalised by GlobalBranches, margin included); the image score is the map's
    maximum, so this is the max of the normalised maps."""
    med, scale = robust_norm(torch.from_numpy(np.asarray(bank[0], np.float64))).numpy()
    return np.max([(bank[1] - med) / scale, *(t for _, t in branches)], 0)


def bank_arrays(mcfg: dict, sets) -> list:
    """``sets`` registered and resized as the bank's checkpoint ``mcfg`` reads them."""
    size, lights = int(mcfg["image_size"]), tuple(mcfg["lights"])
    return [resize_set(s, size, lights) for s in registered(sets, registration_of(mcfg))]


def components(br: GlobalBranches, bank_s: np.ndarray, feats: torch.Tensor) -> dict:
    """Per part the scores a fusion rule reads, before any normalisation: the bank's, each
    branch's (position: its per-light-normalised maximum; histogram: the mean of its restarts'
    z-scores), and each histogram restart's raw distance. ``--dump-scores`` writes these for
    the held-out normals and the test parts, so fusion rules compare offline."""
    with torch.no_grad():
        raw = br._raw(feats)[1].numpy()
        out = {"bank": bank_s.tolist()}
        out.update({name: raw[:, j].tolist() for j, name in enumerate(br.names)})
        out["hist_restarts"] = [h.scores(feats).tolist() for h in br.hists]
    return out


def write_scores(path: Path, comp: dict, labels: list, kinds: list) -> None:
    """``components`` of val and test, with the test parts' labels and defect kinds."""
    comp["test"].update(label=list(labels), kind=list(kinds))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(comp))


def bank_with_branches(
    ckpt: Path, train, val, test, setting: tuple, restarts: int, seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(bank, bank+position+histogram) test scores of the bank checkpoint ``ckpt`` with the
    global branches fitted on ``train`` and normalised on ``val`` (good parts); ``setting`` is
    (prototypes, rare share, shrinkage); and the val and test ``components``. bench/fusion.py's
    ``preset+global`` row."""
    model, mcfg = load_checkpoint(ckpt)
    _, tr_f, _ = run_model(model, bank_arrays(mcfg, train), score=False)
    va_s, va_f, _ = run_model(model, bank_arrays(mcfg, val))
    te_s, te_f, _ = run_model(model, bank_arrays(mcfg, test))
    br, pos, hist = branch_scores(tr_f, va_f, te_f, setting, restarts, seed)
    comp = {"val": components(br, va_s, va_f), "test": components(br, te_s, te_f)}
    return te_s, fuse((va_s, te_s), pos, hist), comp


def defect_name(s) -> str:
    """The defect a test set of an Eyecandies-layout root carries ("good" for none)."""
    from afrd.data.eyecandies import parse_metadata

    if s.label != 1:
        return "good"
    meta = (getattr(s, "meta", None) or {}).get("files") or {}
    return str(parse_metadata(Path(meta["metadata"])).get("defect", "?")) if meta else "?"


def structural_eval(
    ckpt: Path, data: Path, cat: str, pose: str, seed: int, dump: Path | None = None
) -> dict:
    """bench/fusion.py's ``preset+global`` on ``cat`` of an Eyecandies-layout root: I-AUROC of
    the bank ``ckpt`` alone and fused with the branches (``CHOSEN[pose]``, ``CHOSEN_RESTARTS``),
    fitted on its train split, normalised on its val split, scored on test_public; ``dump``: a
    folder to write the parts' component scores, labels and defects to (``<pose>_<cat>.json``)."""
    sets = {split: open_sets(data, split, cat) for split in ("train", "val", "test_public")}
    test = sets["test_public"]
    labels = [int(test[i].label) for i in range(len(test))]
    bank, fused, comp = bank_with_branches(
        ckpt, sets["train"], sets["val"], test, CHOSEN[pose], CHOSEN_RESTARTS, seed
    )
    if dump is not None:
        kinds = [defect_name(test[i]) for i in range(len(test))]
        write_scores(dump / f"{pose}_{cat}.json", comp, labels, kinds)
    both = 0 < sum(labels) < len(labels)  # as afrd eval: no I-AUROC on one class
    return {
        "i_auroc": auroc(labels, fused) if both else None,
        "bank_i_auroc": auroc(labels, bank) if both else None,
        "p_auroc": None,
        "sets": len(test),
        "defective": sum(labels),
    }


def preset_row(work: Path, data: Path, seed: int, cfg: dict, test: list, metrics) -> dict:
    """``afrd train --preset logical`` on ``data``, exported with afrd-export onnx and scored on
    ONNX Runtime (one thread), beside the cpu bank of ``work/bank`` exported the same way:
    I-AUROC (``metrics``) and ms a part of each graph, in this run."""
    from afrd.export.onnx_export import export_onnx
    from afrd.runtime.engines.onnxruntime import open_session

    args = ["--data", str(data), "--category", CAT, "--out", str(work / "logical")]
    args += ["--preset", "logical", "--seed", str(seed), "--device", "cpu", "--no-progress"]
    if cfg["image_size"]:
        args += ["--image-size", str(cfg["image_size"])]
    with contextlib.redirect_stdout(io.StringIO()):
        if train_main(args) != 0:
            raise SystemExit("afrd train --preset logical failed")
    out = {}
    for name in ("logical", "bank"):
        ckpt = work / name / "model.pt"
        bundle = work / f"bundle_{name}"
        export_onnx(ckpt, bundle, force=True, exporter="torchscript", echo=False)
        _, mcfg = load_checkpoint(ckpt)
        x = np.stack(bank_arrays(mcfg, test))
        sess, _ = open_session(bundle / "model.onnx", "cpu", 1)
        sess.run(["score"], {"images": x[:8]})  # warm-up, a full batch
        runs = []
        for _ in range(2):  # the faster of two passes: the box is shared
            t0 = time.perf_counter()
            scores = np.concatenate(
                [sess.run(["score"], {"images": x[i : i + 8]})[0] for i in range(0, len(x), 8)]
            )
            runs.append(1000 * (time.perf_counter() - t0) / len(x))
        out[name] = {**metrics(scores), "ort_ms_per_part": round(min(runs), 1)}
    return out


def run_seed(seed: int, pose: str, cfg: dict, a, settings: list, preset: bool = False) -> dict:
    work = Path(a.work) / f"{pose}_{seed}"
    data = work / "data"
    t0 = time.perf_counter()
    if not (work / "stamp.json").is_file():
        synth(data, [CAT], cfg["train"], cfg["val"], 0, cfg["size"], seed, 0.5,
              progress=False, pose=pose, logical="family")  # fmt: skip
        (work / "stamp.json").write_text(json.dumps(cfg))
    test, kinds = render_test(seed, pose, cfg)
    render_s = time.perf_counter() - t0
    args = ["--data", str(data), "--category", CAT, "--out", str(work / "bank"), "--preset", "cpu"]
    args += ["--seed", str(seed), "--device", "cpu", "--no-progress"]
    if cfg["image_size"]:
        args += ["--image-size", str(cfg["image_size"])]
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        rc = train_main(args)
    if rc != 0:
        raise SystemExit(f"afrd train exited {rc}: {log.getvalue()[-300:]}")
    train_s = time.perf_counter() - t0
    model, mcfg = load_checkpoint(work / "bank" / "model.pt")
    reg, size, lights = registration_of(mcfg), int(mcfg["image_size"]), tuple(mcfg["lights"])
    tr = bank_arrays(mcfg, open_sets(data, "train", CAT, lights, size))
    va = bank_arrays(mcfg, open_sets(data, "val", CAT, lights, size))
    te = bank_arrays(mcfg, test)
    _, tr_f, _ = run_model(model, tr, score=False)
    va_s, va_f, _ = run_model(model, va)
    te_s, te_f, bank_ms = run_model(model, te)
    labels = np.array([k != "good" for k in kinds], int)
    kinds_a = np.array(kinds)

    def metrics(score: np.ndarray) -> dict:
        out = {"logical": auroc(labels, score)}
        for k in KINDS:
            pick = (kinds_a == "good") | (kinds_a == k)
            out[k] = auroc(labels[pick], score[pick])
        return out

    res = {"bank": metrics(te_s), "train_s": round(train_s, 1), "render_s": round(render_s, 1)}
    res["ms_per_part"] = {"bank": round(bank_ms, 1)}
    res["registration"] = None if reg is None else reg.to_dict().get("method")
    for k, rare, shrink in settings:
        tag = f"k{k}_r{rare}_s{shrink}"
        c0 = time.process_time()
        br, pos, hist = branch_scores(
            tr_f, va_f, te_f, (k, rare, shrink), a.restarts, seed, a.margin
        )
        c1 = time.process_time()
        bank = (va_s, te_s)
        res[tag] = {
            "position": metrics(pos[1]),
            "histogram": metrics(hist[1]),
            "bank+position": metrics(fuse(bank, pos)),
            "bank+histogram": metrics(fuse(bank, hist)),
            "bank+position+histogram": metrics(fuse(bank, pos, hist)),
            "fit_and_score_cpu_s": round(c1 - c0, 2),
        }
        # branch cost per test part (features come from the bank's own teacher pass)
        with torch.no_grad():
            c0 = time.process_time()
            br.position.maps(te_f)
            c1 = time.process_time()
            for h in br.hists:
                h.scores(te_f)
            c2 = time.process_time()
        res[tag]["ms_per_part"] = {  # PyTorch, on the bank's features
            "position": round(1000 * (c1 - c0) / len(te), 2),
            "histogram": round(1000 * (c2 - c1) / len(te), 2),
        }
        if a.dump_scores:  # the parts' component scores: fusion rules compared offline
            comp = {"val": components(br, va_s, va_f), "test": components(br, te_s, te_f)}
            path = Path(a.dump_scores) / f"logical_{pose}_{seed}_{tag}.json"
            write_scores(path, comp, labels.tolist(), kinds)
    if a.others:  # CAD as built and an EfficientAD-style autoencoder, the same parts
        from bench.logical_others import other_rows

        feats, bank = (tr_f, va_f, te_f), (va_s, te_s)
        more = other_rows(work, data, CAT, test, seed, feats, bank, metrics, fuse, cfg["cad"])
        for k, rare, shrink in settings:
            res[f"k{k}_r{rare}_s{shrink}"].update(more)
    if preset:
        res["preset_onnx"] = preset_row(work, data, seed, cfg, test, metrics)
    return res


ROWS = ("bank", "position", "histogram", "bank+position", "bank+histogram")
ROWS += ("bank+position+histogram",)


def row_of(r: dict, tag: str, name: str) -> dict:
    return r["bank"] if name == "bank" else r[tag][name]


def table(report: dict, pose: str, tag: str) -> str:
    runs = report["poses"][pose]["report"]
    cols = ("logical", *KINDS)
    lines = [f"{pose} (settings {tag}; {len(runs)} seeds, mean +- s.e.)"]
    lines.append(f"  {'method':<26}" + "".join(f"{c:>16}" for c in cols))
    from bench.logical_others import ROWS as OTHERS

    first = next(iter(runs.values()))[tag]
    for name in (*ROWS, *(n for n in OTHERS if n in first)):
        cells = []
        for c in cols:
            v = [row_of(r, tag, name)[c] for r in runs.values()]
            se = statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.3f} +- {se:.3f}")
        lines.append(f"  {name:<26}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--poses", nargs="+", default=["fixtured", "conveyor"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="report seeds")
    ap.add_argument("--select-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--restarts", type=int, default=1, help="histogram: k-means restarts averaged (z-scores)"
    )
    ap.add_argument(
        "--margin",
        type=float,
        default=MARGIN,
        help="branches' margin above the held-out normals (globalstats.MARGIN)",
    )
    ap.add_argument(
        "--preset-row",
        action="store_true",
        help="also train --preset logical, export it and the bank, score both on ONNX Runtime",
    )
    ap.add_argument("--seeds-only", action="store_true", help="skip the selection seed's grid")
    ap.add_argument(
        "--others",
        action="store_true",
        help="also CAD as built and an EfficientAD-style autoencoder (bench/logical_others.py)",
    )
    ap.add_argument(
        "--dump-scores", metavar="DIR", help="write each run's per-part component scores here"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "logical.json"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "logical_work"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = CONFIGS["quick" if a.quick else "cpu"]
    grid = list(itertools.product(GRID["k"], GRID["rare"], GRID["shrink"]))
    report: dict = {
        "config": "quick" if a.quick else "cpu",
        "sizes": cfg,
        "restarts": a.restarts,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_average_start": os.getloadavg(),
        "poses": {},
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    for pose in a.poses:
        if a.seeds_only:  # the preset's settings, no selection
            ps = BranchSettings()
            chosen, sel = (ps.k, ps.rare, ps.shrink), None
            best = "k{}_r{}_s{}".format(*chosen)
        else:
            sel = run_seed(a.select_seed, pose, cfg, a, grid)
            best = max(
                (f"k{k}_r{r}_s{s}" for k, r, s in grid),
                key=lambda t: sel[t]["bank+position+histogram"]["logical"],
            )
            chosen = next(g for g in grid if f"k{g[0]}_r{g[1]}_s{g[2]}" == best)
        report["poses"][pose] = {"select": sel, "chosen": best, "report": {}}
        print(f"{pose}: settings {best} ({'preset' if a.seeds_only else 'chosen on seed'})")
        out.write_text(json.dumps(report, indent=1))
        for seed in a.seeds:
            r = run_seed(seed, pose, cfg, a, [chosen], a.preset_row)
            report["poses"][pose]["report"][str(seed)] = r
            report["wall_s"] = round(time.perf_counter() - t_start, 1)
            report["load_average_end"] = os.getloadavg()
            out.write_text(json.dumps(report, indent=1))
            print(f"  seed {seed}: bank {r['bank']}, fused {r[best]['bank+position+histogram']}")
            if "preset_onnx" in r:
                print(f"  seed {seed}: on ONNX Runtime {r['preset_onnx']}", flush=True)
        print(table(report, pose, best), flush=True)
    print(f"wrote {out}; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
