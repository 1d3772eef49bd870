"""The `cpu` preset at line speed (issue 23): this commit's bank against today's (the baseline
commit's code, built by its own `afrd train`) and anomalib's PatchCore on the same sets.

Per pose and category (fusion.py's rendered data in bench/out/fusion_cpu_<pose>: 64 normal
training sets, 32 held-out, 48 test sets at 256 px), each model is built and scored:

- build s: `afrd train --preset cpu --threads 1` in a fresh process, this commit's and the
  baseline's alternately (their own ``train_seconds``: data, registration, features, coreset,
  normalisation); the same pair again on ``--load-category`` while ``--load`` CPU-heavy
  processes run beside it (a numpy matmul and a 64 MB copy in a loop, one thread each: a
  reproducible "other job", not whatever else the box runs);
- ms per part: the exported bundles on one ONNX Runtime thread, registration included,
  interleaved round by round with the Lite0 teacher alone (its three stages on the same six
  256 px images, normalisation included) and, for the flatness check, this commit's bank built
  from ``--many`` sets (rendered once); ratios are taken within a round;
- I-AUROC on the test sets (the bundles on ONNX Runtime; the peer in PyTorch, on the sets as
  rendered: it has no registration), mean over the categories run, per pose.

    .venv/bin/python bench/linespeed.py                          # all of it (hours)
    .venv/bin/python bench/linespeed.py --baseline-categories button --peer-categories button
    .venv/bin/python bench/linespeed.py --no-peer --categories button   # minutes

The baseline's build (minutes a category) and the peer's fit are the long parts:
``--baseline-categories`` and ``--peer-categories``/``--peer-poses`` (default: the first pose)
limit them; the table gives each mean with its count, then every pose/category. ``--few K``
also builds both presets from K sets (commissioning from few parts; the timed category).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fusion import CONFIGS, POSES, ensure_data  # noqa: E402

from afrd.data.render import CATEGORIES  # noqa: E402

BASELINE = "bcc29de"  # today's preset (issue 23 was measured on it)
LOAD_CODE = """import numpy as np
a = np.random.rand(1024, 1024).astype(np.float32); b = a.copy()
big = np.random.rand(1 << 24).astype(np.float32); dst = np.empty_like(big)
while True:
    a @ b
    np.copyto(dst, big)
"""
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def baseline_tree(commit: str, out: Path) -> Path:
    """The baseline commit's files (git archive), extracted once."""
    tree = out / f"baseline-{commit}"
    if not (tree / "afrd").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def run_afrd(tree: Path, module: str, args: list[str]) -> None:
    """``python -m``-like run of ``module``'s ``main`` with ``tree`` first on the path."""
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(tree), **ONE_THREAD}
    r = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed in {tree}:\n{r.stderr[-2000:]}")


def build(tree: Path, data: Path, cat: str, out: Path, max_sets: int | None = None) -> dict:
    """`afrd train --preset cpu` on one thread, then `afrd-export onnx`, both by ``tree``'s
    code; the build's own seconds and the bundle."""
    import torch

    shutil.rmtree(out, ignore_errors=True)  # a fresh bundle (export refuses a full folder)
    args = ["train", "--data", str(data), "--category", cat, "--preset", "cpu", "--threads", "1"]
    args += ["--no-progress", "--out", str(out)]
    args += ["--max-sets", str(max_sets)] if max_sets else []
    t0 = time.perf_counter()
    run_afrd(tree, "afrd.cli", args)
    wall = time.perf_counter() - t0
    cfg = torch.load(out / "model.pt", weights_only=True)["config"]
    run_afrd(tree, "afrd.export.cli", ["onnx", str(out / "model.pt"), "--out", str(out / "b")])
    return {"build_s": cfg["train_seconds"], "wall_s": round(wall, 1), "bundle": str(out / "b")}


class Load:
    """``n`` CPU-heavy processes for the duration of a ``with`` block."""

    def __init__(self, n: int) -> None:
        self.n, self.procs = n, []

    def __enter__(self) -> Load:
        env = {**os.environ, **ONE_THREAD}
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", LOAD_CODE], env=env))
        time.sleep(2)  # let them reach their loop before the clock starts
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def test_sets(data: Path, cat: str) -> list:
    from afrd.model.sets import open_sets

    sets = open_sets(data, "test_public", cat, None, 256)
    return [sets[i] for i in range(len(sets))]


def engine(bundle: str, threads: int):
    from afrd.runtime.engines import create_engine

    eng = create_engine("onnxruntime", bundle, device="cpu", threads=threads)
    eng.warmup(2)
    return eng


def auroc_of(score, sets) -> float:
    from afrd.model.metrics import auroc

    labels = np.array([s.label for s in sets])
    return float(auroc(labels, np.array([score(s.images) for s in sets])))


def teacher_session(path: Path):
    """The Lite0 teacher alone (three stages, normalisation in) on ONNX Runtime, one thread."""
    import torch

    from afrd.model.backbones import build_teacher
    from afrd.model.inference import IMAGENET_MEAN, IMAGENET_STD
    from afrd.runtime.engines.onnxruntime import open_session

    class Teacher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.t = build_teacher("efficientnet_lite0", None)[0].eval()
            self.register_buffer("m", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("s", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

        def forward(self, images: torch.Tensor) -> tuple:
            return tuple(self.t((images[0].permute(0, 3, 1, 2).float() - self.m) / self.s))

    example = torch.zeros((1, 6, 256, 256, 3), dtype=torch.uint8)
    torch.onnx.export(Teacher(), (example,), str(path), dynamo=False, input_names=["images"])
    session, _ = open_session(path, "cpu", threads=1)
    return lambda x: session.run(None, {"images": x[None]})


def per_part(runners: dict, parts: list, rounds: int, slow: set) -> dict:
    """Interleaved rounds: each runner once on the same part per round (``slow`` ones every
    third round); median ms and the median of each round's ratio to ``teacher``."""
    ms: dict = {k: [] for k in runners}
    ratio: dict = {k: [] for k in runners}
    for r in range(rounds):
        x = parts[r % len(parts)]
        t_round = {}
        for name, run in runners.items():
            if name in slow and r % 3:
                continue
            t0 = time.perf_counter()
            run(x)
            t_round[name] = (time.perf_counter() - t0) * 1000
            ms[name].append(t_round[name])
        for name, t in t_round.items():
            ratio[name].append(t / t_round["teacher"])
    return {
        k: {
            "ms": round(statistics.median(v), 1),
            "x_teacher": round(statistics.median(ratio[k]), 2),
        }
        for k, v in ms.items()
        if v
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--poses", nargs="+", choices=POSES, default=list(POSES))
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    ap.add_argument("--baseline-categories", nargs="*", default=None, help="default: --categories")
    ap.add_argument("--peer-categories", nargs="*", default=None, help="default: --categories")
    ap.add_argument("--peer-poses", nargs="*", default=None, help="default: the first pose")
    ap.add_argument(
        "--peer-sets",
        type=int,
        default=None,
        help="fit the peer on the first K training sets (its k-center greedy costs K^2); "
        "this commit's preset is then built from the same K too",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip anomalib's PatchCore")
    ap.add_argument("--baseline", default=BASELINE, help="commit of today's preset")
    ap.add_argument("--load", type=int, default=1, help="CPU-heavy processes for the load run")
    ap.add_argument("--load-category", default=None, help="default: the first category")
    ap.add_argument(
        "--load-models", nargs="+", choices=("ours", "today"), default=["ours", "today"]
    )
    ap.add_argument("--many", type=int, default=200, help="sets of the flatness bank (0: skip)")
    ap.add_argument(
        "--few",
        type=int,
        nargs="*",
        default=[],
        help="also build both presets from the first K training sets (the timed category)",
    )
    ap.add_argument("--rounds", type=int, default=15, help="per-part timing rounds")
    ap.add_argument("--eval-threads", type=int, default=2, help="ORT threads for I-AUROC")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "linespeed.json")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    a.out = a.out.resolve()  # the builds run in their own trees
    work = a.out.parent / "linespeed"
    base = baseline_tree(a.baseline, work)
    peer_cats = a.categories if a.peer_categories is None else a.peer_categories
    peer_cats = [] if a.no_peer else peer_cats
    peer_poses = a.poses[:1] if a.peer_poses is None else a.peer_poses
    base_cats = a.categories if a.baseline_categories is None else a.baseline_categories
    load_cat = a.load_category or a.categories[0]
    rep: dict = {
        "command": " ".join(["linespeed.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "loadavg_start": os.getloadavg(),
        "baseline": a.baseline,
        "runs": {},
    }
    cfg = CONFIGS["cpu"]

    def write() -> None:
        rep["loadavg_end"] = os.getloadavg()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rep, indent=1))

    first, peers = None, {}
    for pose in a.poses:
        data = ensure_data(
            ROOT / "bench" / "out" / f"fusion_cpu_{pose}" / "data", {**cfg, "pose": pose}, 0
        )
        for i, cat in enumerate(a.categories):
            d = work / pose / cat
            r = rep["runs"].setdefault(f"{pose}/{cat}", {})
            order = [("ours", ROOT), ("today", base)][:: 1 if i % 2 == 0 else -1]
            order = [(n, t) for n, t in order if n == "ours" or cat in base_cats]
            for name, tree in order:
                r[name] = build(tree, data, cat, d / name)
                print(f"{pose} {cat}: {name} built in {r[name]['build_s']:.1f} s", flush=True)
            sets = test_sets(data, cat)
            for name, _ in order:
                with engine(r[name]["bundle"], a.eval_threads) as eng:
                    r[name]["i_auroc"] = auroc_of(lambda x: float(eng.infer(x)[1][0]), sets)
            if cat in peer_cats and pose in peer_poses:
                r["peer"] = run_peer(data, cat, sets, a.peer_sets)
                if a.peer_sets:  # this commit's preset from the very sets the peer saw
                    k = r["ours_peer_sets"] = build(ROOT, data, cat, d / "ours_k", a.peer_sets)
                    with engine(k["bundle"], a.eval_threads) as eng:
                        k["i_auroc"] = auroc_of(lambda x: float(eng.infer(x)[1][0]), sets)
                peers[(pose, cat)] = r["peer"].pop("model")
            print(f"{pose} {cat}: " + json.dumps(r), flush=True)
            if first is None or ("today" in r and "today" not in first[4]):
                first = (pose, cat, data, sets, r)  # timed per part: the first with both
            if cat == load_cat and pose == a.poses[0] and a.load:
                with Load(a.load):
                    for name, tree in [o for o in order[::-1] if o[0] in a.load_models]:
                        r[f"{name}_loaded"] = build(tree, data, cat, d / f"{name}_loaded")
                rep["load"] = {"processes": a.load, "pose": pose, "category": cat}
            write()
    pose, cat, data, sets, r = first
    if a.many:
        many_cfg = {**cfg, "train": a.many, "test": 4, "categories": [cat], "pose": pose}
        many_data = ensure_data(work / f"many{a.many}" / "data", many_cfg, 0)
        rep["many"] = build(ROOT, many_data, cat, work / f"many{a.many}" / "ours")
        rep["many"]["sets"] = a.many
    for k in a.few:  # commissioning from few parts: this commit's against the baseline's
        few = rep.setdefault("few", {})[str(k)] = {}
        for name, tree in (("ours", ROOT), ("today", base)):
            few[name] = build(tree, data, cat, work / f"few{k}" / name, k)
            with engine(few[name]["bundle"], a.eval_threads) as eng:
                few[name]["i_auroc"] = auroc_of(lambda x: float(eng.infer(x)[1][0]), sets)
        write()
    parts = [s.images for s in sets[:5]]
    engines = {}
    runners = {"teacher": teacher_session(work / "teacher.onnx")}
    for name in [n for n in ("today", "ours") if n in r]:
        engines[name] = engine(r[name]["bundle"], 1)
        runners[name] = engines[name].infer
    if a.many:
        engines["many"] = engine(rep["many"]["bundle"], 1)
        runners[f"ours from {a.many} sets"] = engines["many"].infer
    slow = set()
    if peers:  # the peer fitted on this pose and category, else the first one fitted
        runners["peer"], slow = peers.get((pose, cat), next(iter(peers.values()))).score, {"peer"}
    rep["per_part"] = per_part(runners, parts, a.rounds, slow)
    rep["per_part"]["where"] = f"{pose}/{cat}"
    for e in engines.values():
        e.close()
    write()
    print(table(rep, a.poses))
    return 0


def run_peer(data: Path, cat: str, sets: list, max_sets: int | None = None) -> dict:
    """Fit the peer on the same training (the first ``max_sets``) and held-out sets; its
    I-AUROC on ``sets``."""
    from linespeed_peer import PeerPatchCore

    from afrd.model.sets import normal_subset, open_sets, resize_set

    def arrays(split: str) -> list:
        s = normal_subset(open_sets(data, split, cat, None, 256))
        return [resize_set(s[i], 256) for i in range(len(s))]

    peer = PeerPatchCore(6)
    train = arrays("train")[:max_sets]
    build_s = peer.fit(train, arrays("val"))
    return {
        "build_s": round(build_s, 1),
        "sets": len(train),
        "i_auroc": auroc_of(peer.score, sets),
        "model": peer,
    }


def table(rep: dict, poses: list[str]) -> str:
    def mean(vals: list, digits: int = 3) -> str:
        vals = [v for v in vals if v is not None]
        return f"{statistics.fmean(vals):.{digits}f} ({len(vals)})" if vals else "-"

    runs, pp = rep["runs"], rep["per_part"]
    rows = [("this commit's cpu preset", "ours"), (f"cpu preset at {rep['baseline']}", "today")]
    peer_sets = next((r["peer"]["sets"] for r in runs.values() if "peer" in r), None)
    if any("ours_peer_sets" in r for r in runs.values()):
        rows.append((f"this commit's cpu preset from {peer_sets} sets", "ours_peer_sets"))
    rows.append((f"anomalib PatchCore (Lite0 features, {peer_sets or 'all'} sets)", "peer"))
    head = "| model | build s | build s under load | ms/part | x teacher | "
    head += " | ".join(f"I-AUROC {p}" for p in poses) + " |"
    lines = [f"loadavg {rep['loadavg_start']} -> {rep['loadavg_end']}", head]
    lines.append("|" + "---|" * (5 + len(poses)))
    t = pp["teacher"]
    lines.append(f"| Lite0 teacher alone | - | - | {t['ms']} | 1.00 |" + " - |" * len(poses))
    for label, key in rows:
        builds = [r[key]["build_s"] for r in runs.values() if key in r]
        loaded = [r[f"{key}_loaded"]["build_s"] for r in runs.values() if f"{key}_loaded" in r]
        aur = [
            mean([r[key].get("i_auroc") for k, r in runs.items() if k.startswith(p) and key in r])
            for p in poses
        ]
        timing = pp.get(key, {})
        lines.append(
            f"| {label} | {mean(builds, 1)} | {mean(loaded, 1)} | {timing.get('ms', '-')} | "
            f"{timing.get('x_teacher', '-')} | " + " | ".join(aur) + " |"
        )
    if "many" in rep:
        m = next((v for k, v in pp.items() if k.startswith("ours from")), {})
        lines.append(
            f"| this commit's, bank from {rep['many'].get('sets', 'many')} sets | "
            f"{rep['many']['build_s']} | - | {m.get('ms', '-')} | {m.get('x_teacher', '-')} |"
            + " - |"
            * len(poses)
        )
    for k, few in rep.get("few", {}).items():
        lines.append(
            f"| from {k} sets, {rep['per_part']['where']}: this commit's / {rep['baseline']} | "
            + " / ".join(f"{few[n]['build_s']:.1f}" for n in ("ours", "today"))
            + " | - | - | - | "
            + " / ".join(f"{few[n]['i_auroc']:.3f}" for n in ("ours", "today"))
            + " |"
            + " - |" * (len(poses) - 1)
        )
    lines += ["", "| pose/category | " + " | ".join(k for _, k in rows) + " |"]
    lines.append("|" + "---|" * (1 + len(rows)))
    for where, r in runs.items():
        aur = [f"{r[k]['i_auroc']:.3f}" if "i_auroc" in r.get(k, {}) else "-" for _, k in rows]
        lines.append(f"| {where} | " + " | ".join(aur) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
