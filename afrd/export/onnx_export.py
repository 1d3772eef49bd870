"""Checkpoint -> bundle: one ONNX graph from the raw uint8 image set to map and score.

``export_onnx`` validates its arguments before doing any work, exports the model kind's
inference module (afrd.model.kinds; AFRD's is ``afrd.model.inference.InferenceModel``) with a
dynamic batch dimension (the dynamo exporter, or the TorchScript exporter if dynamo fails or is
asked for), checks the graph with ``onnx.checker``, writes the metadata into the graph
(``metadata_props``) and into bundle.json, and compares ONNX Runtime with PyTorch on fresh random image sets (batch 1 and 3) and, if given,
real ones. bundle.json is written only after parity passes, so a failed export never leaves a
loadable bundle behind. Imports torch: build machines only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from afrd.errors import BundleError, ConfigError
from afrd.runtime.bundle import (
    BUNDLE_JSON,
    IMAGENET_NORMALIZATION,
    ONNX_FILE,
    SCHEMA,
    Bundle,
    create_bundle,
    sha256_file,
)

log = logging.getLogger("afrd.export.onnx")

EXPORTERS = ("auto", "dynamo", "torchscript")
REGISTRATION_FILE = "registration.png"  # the registration reference image in a bundle
OPSETS = range(17, 24)


@dataclass(frozen=True)
class Tolerance:
    """|onnx - torch| <= atol + rtol * max|torch|, separately for maps and scores."""

    atol: float = 1e-4
    rtol: float = 1e-3

    def limit(self, ref: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.abs(ref).max(initial=0.0))


FP32_TOLERANCE = Tolerance()


def validate_args(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    opset: int,
    force: bool,
    exporter: str,
) -> tuple[Path, Path]:
    ckpt, out = Path(checkpoint), Path(out_dir)
    if not ckpt.is_file():
        raise ConfigError(f"checkpoint {ckpt} does not exist (expected a file from `afrd train`)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} is not empty; pass --force to overwrite the bundle there")
    if opset not in OPSETS:
        raise ConfigError(f"--opset {opset}: expected {OPSETS.start}..{OPSETS.stop - 1}")
    if exporter not in EXPORTERS:
        raise ConfigError(f"--exporter {exporter!r}: expected one of {EXPORTERS}")
    return ckpt, out


def _export_graph(inference: Any, example: Any, path: Path, opset: int, exporter: str) -> str:
    """Write the ONNX graph; returns the exporter that succeeded."""
    import torch

    names = {"input_names": ["images"], "output_names": ["anomaly_map", "score"]}
    errors = []
    if exporter in ("auto", "dynamo"):
        try:
            batch = torch.export.Dim("batch", min=1, max=1024)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    inference,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    dynamic_shapes={"images": {0: batch}},
                    verbose=False,
                    **names,
                )
            program.save(str(path))
            return "dynamo"
        except Exception as exc:  # noqa: BLE001 - fall back, and say why
            if exporter == "dynamo":
                raise BundleError(f"dynamo ONNX export failed: {exc}") from exc
            errors.append(f"dynamo: {type(exc).__name__}: {exc}")
            log.warning(
                "dynamo exporter failed (%s); falling back to the TorchScript exporter", exc
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                inference,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                dynamic_axes={
                    "images": {0: "batch"},
                    "anomaly_map": {0: "batch"},
                    "score": {0: "batch"},
                },
                do_constant_folding=True,
                **names,
            )
        return "torchscript"
    except Exception as exc:
        errors.append(f"torchscript: {type(exc).__name__}: {exc}")
        raise BundleError("ONNX export failed: " + " | ".join(errors)) from exc


def _write_metadata(path: Path, props: dict[str, Any]) -> None:
    """Put the bundle's key facts into the graph itself (onnx metadata_props), then check it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    model.producer_name = "afrd"
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def _errors(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max(initial=0.0))
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-6)).max(initial=0.0))
    return max_abs, max_rel


def parity_check(
    onnx_path: Path,
    inference: Any,
    inputs: Sequence[tuple[str, np.ndarray]],
    tol: Tolerance = FP32_TOLERANCE,
    threads: int | None = None,
    echo: bool = True,
) -> list[dict[str, Any]]:
    """ONNX Runtime vs PyTorch on each (label, uint8 [B,N,H,W,3]); BundleError past ``tol``."""
    import torch

    from afrd.runtime.engines.onnxruntime import open_session

    sess, _ = open_session(onnx_path, "cpu", threads)
    results, failures = [], []
    for label, x in inputs:
        with torch.inference_mode():
            ref_map, ref_score = (t.numpy() for t in inference(torch.from_numpy(x)))
        got_map, got_score = sess.run(["anomaly_map", "score"], {"images": x})
        if got_map.shape != ref_map.shape or got_score.shape != ref_score.shape:
            raise BundleError(
                f"parity {label}: ONNX output shapes {got_map.shape}/{got_score.shape} differ from "
                f"PyTorch {ref_map.shape}/{ref_score.shape}"
            )
        row = {"input": label, "batch": int(x.shape[0])}
        for what, got, ref in (("map", got_map, ref_map), ("score", got_score, ref_score)):
            max_abs, max_rel = _errors(got, ref)
            limit = tol.limit(ref)
            row[what] = {"max_abs": max_abs, "max_rel": max_rel, "limit_abs": limit}
            if not max_abs <= limit:
                failures.append(f"{label} {what}: max abs error {max_abs:.3g} > {limit:.3g}")
        results.append(row)
        if echo:
            print(
                f"parity {label:<14} B={row['batch']}  map max abs {row['map']['max_abs']:.2e} "
                f"rel {row['map']['max_rel']:.2e}  score max abs {row['score']['max_abs']:.2e} "
                f"rel {row['score']['max_rel']:.2e}  (limit abs {row['map']['limit_abs']:.1e})"
            )
    if failures:
        raise BundleError(
            f"parity FAILED for {onnx_path} (tolerance atol={tol.atol:g} + rtol={tol.rtol:g}*max|ref|): "
            + "; ".join(failures)
        )
    return results


def random_inputs(
    n_lights: int, size: int, batches: Sequence[int] = (1, 3), seed: int | None = None
) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (f"random B={b}", rng.integers(0, 256, (b, n_lights, size, size, 3), dtype=np.uint8))
        for b in batches
    ]


def real_inputs(
    data: str | os.PathLike,
    lights: Sequence[str],
    size: int,
    split: str = "test_public",
    category: str | None = None,
    limit: int = 4,
    registration: Any = None,
) -> list[tuple[str, np.ndarray]]:
    """Up to ``limit`` image sets from a dataset on disk, resized to the model input, as one batch
    (registered first when the model was trained on registered sets)."""
    from afrd.data.datasets import open_dataset
    from afrd.model.sets import registered
    from afrd.runtime.engines.base import resize_sets

    ds = registered(
        open_dataset(data, split, category=category, lights=tuple(lights)), registration
    )
    n = min(limit, len(ds))
    if n == 0:
        raise ConfigError(f"--data {data}: split {split!r} has no image sets")
    sets = [ds[i].images for i in range(n)]
    x = np.stack(
        [s if s.shape[1:3] == (size, size) else resize_sets(s[None], (size, size))[0] for s in sets]
    )
    return [(f"real x{n}", np.ascontiguousarray(x))]


def export_onnx(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    opset: int = 18,
    force: bool = False,
    exporter: str = "auto",
    data: str | os.PathLike | None = None,
    data_split: str = "test_public",
    data_category: str | None = None,
    tolerance: Tolerance = FP32_TOLERANCE,
    name: str | None = None,
    seed: int | None = None,
    echo: bool = True,
) -> Bundle:
    """Export ``checkpoint`` to a verified bundle in ``out_dir``; returns the loaded Bundle."""
    import torch

    from afrd import __version__
    from afrd.data.register import png_bytes
    from afrd.model import kinds
    from afrd.model.checkpoint import inference_module, load_checkpoint, registration_of

    ckpt, out = validate_args(checkpoint, out_dir, opset, force, exporter)
    model, cfg = load_checkpoint(ckpt)
    kind = kinds.get(kinds.name_of(cfg))  # its export hooks: score rule, bundle.json keys
    lights = tuple(cfg["lights"])
    size = int(cfg["image_size"])
    if len(lights) != model.n_lights:
        raise ConfigError(
            f"checkpoint {ckpt}: config lists {len(lights)} lights {list(lights)} but the model "
            f"was built for {model.n_lights}"
        )
    inference = inference_module(model).eval()
    if out.is_dir() and force:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_FILE

    t0 = time.perf_counter()
    example = torch.zeros((2, len(lights), size, size, 3), dtype=torch.uint8)
    used = _export_graph(inference, example, onnx_path, opset, exporter)
    export_s = time.perf_counter() - t0
    teacher_weights = str(cfg.get("teacher_weights_source", "unknown"))
    random_teacher = teacher_weights == "random"
    ckpt_sha = sha256_file(ckpt)
    _write_metadata(
        onnx_path,
        {
            "afrd.schema": SCHEMA,
            "afrd.version": __version__,
            "afrd.lights": list(lights),
            "afrd.input_size": [size, size],
            "afrd.input": "uint8 [batch, N, H, W, 3] RGB; normalization inside the graph",
            "afrd.outputs": "anomaly_map float32 [batch, H, W]; score float32 [batch] = "
            + kind.score_rule(cfg)
            + " of map",
            "afrd.model_kind": kind.name,
            "afrd.teacher": str(cfg.get("teacher")),
            "afrd.teacher_weights": teacher_weights,
            "afrd.fusion": str(cfg.get("fusion")),
            "afrd.checkpoint_sha256": ckpt_sha,
        },
    )
    if echo:
        print(f"exported {onnx_path} with the {used} exporter (opset {opset}) in {export_s:.1f} s")
        if random_teacher:
            print(
                "WARNING: this model's teacher has RANDOM weights: the bundle is for tests and "
                "timing only, not for inspection"
            )

    # registration runs before the graph in every engine: declared in bundle.json, with its
    # reference image a hashed file of the bundle
    registration = registration_of(cfg)
    preprocessing, files = [], []
    if registration is not None:
        (out / REGISTRATION_FILE).write_bytes(png_bytes(registration))
        preprocessing = [
            {"step": "register", **registration.params(), "reference": REGISTRATION_FILE}
        ]
        files = [REGISTRATION_FILE]
    inputs = random_inputs(len(lights), size, seed=seed)
    if data is not None:
        inputs += real_inputs(
            data, lights, size, split=data_split, category=data_category, registration=registration
        )
    parity = parity_check(onnx_path, inference, inputs, tolerance, echo=echo)

    summary_keys = (
        "loss",
        "epochs",
        "seed",
        "data",
        "data_summary",
        "categories",
        "category",
        "lr",
        "batch_size",
        "epoch",
        "train_sets",
        "dataset",
    )
    training = {k: cfg[k] for k in summary_keys if k in cfg}
    bundle = create_bundle(
        out,
        lights=lights,
        input_size=(size, size),
        name=name or out.name,
        normalization=dict(IMAGENET_NORMALIZATION),
        model={
            "teacher": cfg.get("teacher"),
            "teacher_weights": teacher_weights,
            "random_teacher": random_teacher,
            "kind": kind.name,
            "fusion": cfg.get("fusion"),
            **kind.bundle_model(cfg),
            "views": int(getattr(model, "views", 1)),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        },
        training=training,
        onnx={
            "opset": opset,
            "exporter": used,
            "torch_version": torch.__version__,
            "export_s": round(export_s, 2),
            "dynamic_batch": True,
            "parity": {
                "tolerance": {"atol": tolerance.atol, "rtol": tolerance.rtol},
                "results": parity,
            },
        },
        extra={
            "source": {"checkpoint": str(ckpt.resolve()), "checkpoint_sha256": ckpt_sha},
            **({"preprocessing": preprocessing} if preprocessing else {}),
        },
        files=files,
        products=tuple(cfg.get("categories") or ()),  # multi-class: one threshold each
    )
    if not (out / BUNDLE_JSON).is_file():  # pragma: no cover - create_bundle writes it
        raise BundleError(f"bundle {out}: {BUNDLE_JSON} was not written")
    return bundle
