"""Precision variants of a bundle's graph: fp16 (for TensorRT) and static INT8 QDQ.

TensorRT builds strongly typed networks, so precision is decided here, in the ONNX graph, and
not by builder flags. Both variants keep the graph's I/O: uint8 image sets in, float32 map and
score out. Variants are written into the bundle (``model.fp16.onnx``, ``model.int8.onnx``) and
hashed into bundle.json like every other file. Torch-free (onnx + onnxruntime.quantization).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from afrd.errors import ConfigError
from afrd.runtime.bundle import Bundle

FP16_FILE = "model.fp16.onnx"
INT8_FILE = "model.int8.onnx"


def make_fp16(bundle: Bundle, out_name: str = FP16_FILE) -> Path:
    """Cast weights and activations to float16 inside the graph; I/O types unchanged."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(bundle.onnx_path))
    # keep_io_types: the float32 outputs stay float32 (a Cast is added at the end); the uint8
    # input is untouched. The blur and the final max run in fp16 like everything else.
    model16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    _topological_order(model16.graph)
    out = bundle.path / out_name
    onnx.save(model16, str(out))
    onnx.checker.check_model(str(out))
    bundle.add_file(out_name, role="onnx-variant", precision="fp16")
    return out


def _topological_order(graph) -> None:  # noqa: ANN001 - an onnx GraphProto
    """Put ``graph``'s nodes in an order where each comes after its inputs' producers.

    The fp16 converter appends the Casts it adds around ops it keeps in fp32 at the end of the
    graph (the memory bank's distance floor: Max, Sqrt), which the ONNX checker and ONNX
    Runtime refuse. Stable: nodes keep their order where it is already valid."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # an outer-scope name (subgraphs) or a real cycle: leave it to the checker
            ordered += pending
            break
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
        for n in ready:
            ordered.append(n)
            known.update(n.output)
    nodes = [type(n)() for n in ordered]
    for new, n in zip(nodes, ordered, strict=True):
        new.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(nodes)


class _SetReader:
    """onnxruntime.quantization CalibrationDataReader over uint8 [N,H,W,3] image sets."""

    def __init__(self, sets: Iterable[np.ndarray], input_name: str = "images") -> None:
        self._it: Iterator[np.ndarray] = iter(sets)
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.input_name: np.ascontiguousarray(x[None])}

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        raise NotImplementedError


def calibration_sets(
    calib: str | os.PathLike,
    bundle: Bundle,
    split: str = "train",
    category: str | None = None,
    limit: int = 32,
) -> list[np.ndarray]:
    """Up to ``limit`` normal image sets from a dataset dir, resized to the bundle input."""
    from afrd.data.datasets import open_dataset
    from afrd.runtime.engines.base import resize_sets

    ds = open_dataset(calib, split, category=category, lights=bundle.lights)
    if len(ds) == 0:
        raise ConfigError(f"--data {calib}: split {split!r} has no image sets")
    h, w = bundle.input_size
    out = []
    for i in range(min(limit, len(ds))):
        x = ds[i].images
        out.append(x if x.shape[1:3] == (h, w) else resize_sets(x[None], (h, w))[0])
    return out


def make_int8_qdq(
    bundle: Bundle,
    sets: list[np.ndarray],
    out_name: str = INT8_FILE,
    per_channel: bool = True,
) -> Path:
    """Static INT8 QDQ (symmetric, as TensorRT wants) calibrated with MinMax on ``sets``."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not sets:
        raise ConfigError("INT8 calibration needs at least one image set")
    out = bundle.path / out_name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(bundle.onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            _SetReader(sets),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    bundle.add_file(out_name, role="onnx-variant", precision="int8-qdq", calib_sets=len(sets))
    return out
