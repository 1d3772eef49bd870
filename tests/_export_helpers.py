"""Helpers for the export/engine tests (and any test that needs a bundle without torch).

``make_toy_bundle`` writes a real ONNX graph with the bundle's I/O contract (uint8
[B,N,H,W,3] -> map [B,H,W] = mean brightness over lights and channels, score [B] = max of the
map), so bundle loading and ONNX Runtime are exercised for real in milliseconds. It is a toy
model, not AFRD: tests that need the real network export one (see test_export_onnx.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from afrd.data.lights import DEFAULT_LIGHTS
from afrd.runtime.bundle import Bundle, create_bundle


def toy_onnx(path: Path, n_lights: int, size: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info(
        "images", TensorProto.UINT8, ["batch", n_lights, size, size, 3]
    )
    out_map = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", size, size])
    out_score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / 255.0])
    axes_nc = helper.make_tensor("axes_nc", TensorProto.INT64, [2], [1, 4])
    axes_hw = helper.make_tensor("axes_hw", TensorProto.INT64, [2], [1, 2])
    nodes = [
        helper.make_node("Cast", ["images"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "scale"], ["xs"]),
        helper.make_node("ReduceMean", ["xs", "axes_nc"], ["anomaly_map"], keepdims=0),
        helper.make_node("ReduceMax", ["anomaly_map", "axes_hw"], ["score"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "toy", [inp], [out_map, out_score], [scale, axes_nc, axes_hw])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_toy_bundle(
    out_dir: Path, lights: tuple[str, ...] = DEFAULT_LIGHTS, size: int = 32
) -> Bundle:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    toy_onnx(out_dir / "model.onnx", len(lights), size)
    return create_bundle(
        out_dir,
        lights=lights,
        input_size=(size, size),
        model={"teacher": "toy-mean-brightness", "teacher_weights": "none", "fusion": "mean"},
        training={"note": "toy graph for tests"},
        name="toy",
    )


def toy_reference(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the toy graph computes, in numpy."""
    x = images.astype(np.float32) / 255.0
    maps = x.mean(axis=(1, 4))
    return maps, maps.max(axis=(1, 2))


def make_checkpoint(
    path: Path,
    teacher: str = "efficientnet_lite0",
    size: int = 64,
    fusion: str = "attention",
    lights: tuple[str, ...] = DEFAULT_LIGHTS,
    seed: int = 0,
) -> Path:
    """An untrained AFRD with a RANDOM teacher, saved as a real checkpoint (export/timing tests)."""
    from afrd.model.checkpoint import random_checkpoint

    data = "none (untrained, for export tests)"
    return random_checkpoint(path, teacher, fusion, lights, size, seed=seed, data=data)[1]
