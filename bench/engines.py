"""Per-part latency (p50, p99) and throughput of every engine on the same bundle, in one run.

For each teacher (EfficientNet-Lite0 and WideResNet-50-2, attention fusion, six lights, 256x256):
export a bundle with the real exporter, then time PyTorch eager (the reference, CPU), ONNX Runtime
CPU, optionally ONNX Runtime static INT8 QDQ, TensorRT (where installed) and the null engine.
Then "six single-light RD models run one after another" (what a user does without fusion): one
single-light model per light, each run on its own image, sequentially per part.

Weights are RANDOM (teacher and student): timing does not depend on their values; no accuracy
figure here means anything. The six single-light models share one architecture and one exported
bundle (identical compute per model; separate weights would only change cache behaviour).

GPU part: PyTorch CUDA fp16 + channels-last per part for the paper model (WRN50-2, attention)
at batch 1 -- goal <= 3 ms on an H100; prints "skipped: no CUDA device" without one.

    nice -n 5 .venv/bin/python bench/engines.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from afrd.data.lights import DEFAULT_LIGHTS  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def time_engine(
    engine,
    n_lights: int,
    size: int,
    iters: int,
    warmup: int,
    tp_batch: int,
    tp_iters: int,
    seed: int = 0,
) -> dict:
    """Batch-1 latency per part over ``iters`` fresh parts; throughput at batch ``tp_batch``."""
    rng = np.random.default_rng(seed)
    engine.warmup(warmup)
    lat = []
    for _ in range(iters):
        x = rng.integers(0, 256, (1, n_lights, size, size, 3), dtype=np.uint8)
        engine.infer(x)
        lat.append(engine.last_timings["total_ms"])
    tp = None
    if tp_iters > 0:
        x = rng.integers(0, 256, (tp_batch, n_lights, size, size, 3), dtype=np.uint8)
        engine.infer(x)
        t0 = time.perf_counter()
        for _ in range(tp_iters):
            engine.infer(x)
        tp = tp_batch * tp_iters / (time.perf_counter() - t0)
    return {
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "mean_ms": statistics.fmean(lat),
        "n": len(lat),
        "throughput_parts_s": tp,
        "throughput_batch": tp_batch,
    }


def time_six_single(engines: list, size: int, iters: int, warmup: int, seed: int = 0) -> dict:
    """Per part: each single-light engine on its own light, one after another (batch 1)."""
    rng = np.random.default_rng(seed)
    for e in engines:
        e.warmup(warmup)
    lat = []
    for _ in range(iters):
        part = rng.integers(0, 256, (1, len(engines), size, size, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        for k, e in enumerate(engines):
            e.infer(part[:, k : k + 1])
        lat.append((time.perf_counter() - t0) * 1e3)
    p50 = percentile(lat, 50)
    return {
        "p50_ms": p50,
        "p99_ms": percentile(lat, 99),
        "mean_ms": statistics.fmean(lat),
        "n": len(lat),
        "throughput_parts_s": 1e3 / statistics.fmean(lat),
        "throughput_batch": 1,
    }


def make_bundle(work: Path, teacher: str, fusion: str, lights: tuple[str, ...], size: int) -> tuple:
    from afrd.export.onnx_export import export_onnx

    tag = f"{teacher}-{fusion.replace(':', '')}-{len(lights)}l-{size}"
    from afrd.model.checkpoint import random_checkpoint

    model, ckpt = random_checkpoint(work / f"{tag}.pt", teacher, fusion, lights, size)
    t0 = time.perf_counter()
    bundle = export_onnx(ckpt, work / tag, force=True, echo=False)
    return model, bundle, time.perf_counter() - t0


def gpu_part(size: int, iters: int) -> dict:
    """PyTorch CUDA fp16 + channels-last, paper model, batch 1."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from afrd.model.checkpoint import build_model
    from afrd.runtime.engines.pytorch import PyTorchEngine

    arch = {"teacher": "wide_resnet50_2", "fusion": "attention", "lights": DEFAULT_LIGHTS}
    model = build_model({**arch, "image_size": size}).eval()

    class _B:  # the engine only needs lights and input size from a bundle
        lights = DEFAULT_LIGHTS
        input_size = (size, size)
        name = "paper-model"

    eng = PyTorchEngine(_B(), model=model, device="cuda")
    r = time_engine(eng, 6, size, iters, warmup=10, tp_batch=8, tp_iters=max(5, iters // 5))
    r["engine"] = eng.name
    r["gpu"] = torch.cuda.get_device_name(0)
    r["goal_ms"] = 3.0
    return r


def int8_accuracy(ckpt: Path, data: Path, category: str | None, work: Path, threads: int) -> dict:
    """I-AUROC of the fp32 graph and of its static INT8 QDQ variant on the same test split."""
    from afrd.data.datasets import open_dataset
    from afrd.export.onnx_export import export_onnx
    from afrd.export.precision import INT8_FILE, calibration_sets, make_int8_qdq
    from afrd.model.metrics import auroc
    from afrd.runtime.engines import create_engine

    bundle = export_onnx(ckpt, work / "accuracy-bundle", force=True, echo=False)
    make_int8_qdq(bundle, calibration_sets(data, bundle, "train", category, limit=32))
    test = open_dataset(data, "test_public", category=category, lights=bundle.lights)
    sets = [test[i] for i in range(len(test))]
    labels = np.array([s.label for s in sets])
    out = {
        "checkpoint": str(ckpt),
        "data": str(data),
        "category": category,
        "test_sets": len(sets),
        "defective": int(labels.sum()),
    }
    for key, onnx_file in (("fp32", "model.onnx"), ("int8", INT8_FILE)):
        eng = create_engine(
            "onnxruntime", bundle, device="cpu", threads=threads, onnx_file=onnx_file
        )
        scores = np.concatenate([eng.infer(s.images)[1] for s in sets])
        out[f"i_auroc_{key}"] = auroc(labels, scores)
        eng.close()
    out["i_auroc_loss"] = out["i_auroc_fp32"] - out["i_auroc_int8"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few iterations (shared 2-core machines)")
    p.add_argument("--teachers", default="efficientnet_lite0,wide_resnet50_2")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iters", type=int, default=None, help="timed parts per engine (batch 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for ORT and torch")
    p.add_argument("--int8", action="store_true", help="also time ONNX Runtime static INT8 QDQ")
    p.add_argument("--no-single", action="store_true", help="skip the six single-light models")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "engines.json")
    p.add_argument("--workdir", type=Path, help="keep checkpoints/bundles here (default: temp)")
    p.add_argument(
        "--accuracy-ckpt",
        type=Path,
        help="trained checkpoint: report the I-AUROC of fp32 vs INT8 QDQ on --accuracy-data",
    )
    p.add_argument("--accuracy-data", type=Path, help="dataset with train and test_public splits")
    p.add_argument("--accuracy-category")
    p.add_argument("--skip-timing", action="store_true", help="only the --accuracy-* part")
    a = p.parse_args(argv)
    if a.workdir:
        a.workdir.mkdir(parents=True, exist_ok=True)
        return run(a, a.workdir)
    with tempfile.TemporaryDirectory(prefix="afrd-bench-") as tmp:  # removed on any exit
        return run(a, Path(tmp))


def run(a: argparse.Namespace, work: Path) -> int:
    """The benchmark proper, with checkpoints and bundles under ``work``."""
    iters = a.iters or (5 if a.quick else 50)
    warmup = 1 if a.quick else 5
    tp_batch, tp_iters = (2, 1) if a.quick else (8, 5)

    import torch

    from afrd.runtime.engines import create_engine

    torch.set_num_threads(a.threads)

    rows: list[dict] = []
    result = {
        "bench": "engines",
        "note": "random weights (timing only); CPU figures on a shared machine",
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": a.threads,
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "settings": {
            "size": a.size,
            "iters": iters,
            "warmup": warmup,
            "tp_batch": tp_batch,
            "quick": a.quick,
        },
        "rows": rows,
    }
    try:
        import onnxruntime

        result["machine"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass

    def add(model: str, eng_name: str, r: dict, ref: dict | None) -> None:
        row = {"model": model, "engine": eng_name, **r}
        if ref is not None and r.get("p50_ms"):
            row["speedup_vs_pytorch_eager"] = ref["p50_ms"] / r["p50_ms"]
        rows.append(row)
        tp = r.get("throughput_parts_s")
        sp = row.get("speedup_vs_pytorch_eager")
        print(
            f"  {eng_name:<34} p50 {r['p50_ms']:9.1f} ms  p99 {r['p99_ms']:9.1f} ms  "
            + ("" if tp is None else f"{tp:7.2f} parts/s")
            + ("" if sp is None else f"  x{sp:.2f} vs eager"),
            flush=True,
        )

    if a.accuracy_ckpt:
        acc = int8_accuracy(a.accuracy_ckpt, a.accuracy_data, a.accuracy_category, work, a.threads)
        result["int8_accuracy"] = acc
        print(
            f"INT8 QDQ accuracy ({acc['test_sets']} test sets, {acc['defective']} defective): "
            f"I-AUROC fp32 {acc['i_auroc_fp32']:.4f}, int8 {acc['i_auroc_int8']:.4f}, "
            f"loss {acc['i_auroc_loss']:+.4f}",
            flush=True,
        )
    teachers = [] if a.skip_timing else [t.strip() for t in a.teachers.split(",") if t.strip()]
    for teacher in teachers:
        label = f"{teacher} attention 6 lights {a.size}px"
        print(f"\n== {label} (random weights) ==", flush=True)
        model, bundle, export_s = make_bundle(work, teacher, "attention", DEFAULT_LIGHTS, a.size)
        print(
            f"  exported in {export_s:.0f} s ({bundle.meta['onnx']['exporter']} exporter), "
            f"{bundle.meta['model']['parameters'] / 1e6:.1f} M params",
            flush=True,
        )
        args = (6, a.size, iters, warmup, tp_batch, tp_iters)
        pt = create_engine("pytorch", bundle, model=model, threads=a.threads)
        ref = time_engine(pt, *args)
        add(label, pt.name + " eager", ref, ref)
        pt.close()
        ort = create_engine("onnxruntime", bundle, device="cpu", threads=a.threads)
        add(label, ort.name, time_engine(ort, *args), ref)
        ort.close()
        if a.int8:
            from afrd.export.precision import INT8_FILE, make_int8_qdq

            rng = np.random.default_rng(1)
            calib = [rng.integers(0, 256, (6, a.size, a.size, 3), dtype=np.uint8) for _ in range(4)]
            make_int8_qdq(bundle, calib)
            q = create_engine(
                "onnxruntime", bundle, device="cpu", threads=a.threads, onnx_file=INT8_FILE
            )
            add(label, q.name, time_engine(q, *args), ref)
            q.close()
        try:
            trt_eng = create_engine("tensorrt", bundle)
            add(label, trt_eng.name, time_engine(trt_eng, *args), ref)
        except Exception as exc:  # noqa: BLE001 - report why it did not run
            rows.append({"model": label, "engine": "tensorrt", "skipped": str(exc).split(":")[0]})
            print(f"  {'tensorrt':<34} skipped: {str(exc).split(':')[0]}")
        null = create_engine("null", bundle)
        add(label, null.name, time_engine(null, *args), None)

        if not a.no_single:
            slabel = f"{teacher} six single-light RD models {a.size}px"
            print(f"== {slabel}, run one after another per part ==", flush=True)
            smodel, sbundle, _ = make_bundle(
                work, teacher, "single:0", (DEFAULT_LIGHTS[0],), a.size
            )
            engines = [
                create_engine("pytorch", sbundle, model=smodel, threads=a.threads) for _ in range(6)
            ]
            add(
                slabel,
                "pytorch[cpu] eager x6",
                time_six_single(engines, a.size, iters, warmup),
                ref,
            )
            engines = [
                create_engine("onnxruntime", sbundle, device="cpu", threads=a.threads)
                for _ in range(6)
            ]
            add(
                slabel,
                engines[0].name + " x6",
                time_six_single(engines, a.size, iters, warmup),
                ref,
            )
        del model

    if a.skip_timing:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    print("\n== GPU: PyTorch CUDA fp16 + channels-last, paper model (WRN50-2 attention), B=1 ==")
    g = gpu_part(a.size, 200 if not a.quick else 50)
    result["gpu"] = g
    if "skipped" in g:
        print(f"  skipped: {g['skipped']}")
    else:
        ok = "meets" if g["p50_ms"] <= g["goal_ms"] else "MISSES"
        print(
            f"  {g['gpu']}: p50 {g['p50_ms']:.2f} ms p99 {g['p99_ms']:.2f} ms "
            f"({ok} the {g['goal_ms']} ms goal); {g['throughput_parts_s']:.0f} parts/s at B=8"
        )

    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {a.out}")
    print("\n" + markdown_table(rows))
    return 0


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| model | engine | p50 ms | p99 ms | parts/s | speed-up vs PyTorch eager |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['engine']} | skipped: {r['skipped']} | | | |")
            continue
        tp = r.get("throughput_parts_s")
        sp = r.get("speedup_vs_pytorch_eager")
        lines.append(
            f"| {r['model']} | {r['engine']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{'' if tp is None else f'{tp:.2f}'} (B={r.get('throughput_batch')}) | "
            f"{'' if sp is None else f'{sp:.2f}x'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
