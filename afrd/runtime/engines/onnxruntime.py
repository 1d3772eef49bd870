"""ONNX Runtime backend: CPU (intra-op threads configurable) or the CUDA provider when present.

Runs the bundle's own graph (or a listed variant such as ``model.int8.onnx``), so its output is
the reference every other engine is compared with.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

from afrd.errors import ConfigError
from afrd.runtime.bundle import ONNX_FILE, Bundle
from afrd.runtime.engines.base import Engine

DEVICES = ("auto", "cpu", "cuda")


def open_session(
    path: str | os.PathLike, device: str = "auto", threads: int | None = None
) -> tuple[ort.InferenceSession, str]:
    """The one way afrd opens an ONNX Runtime session: (session, "cuda"|"cpu")."""
    if device not in DEVICES:
        raise ConfigError(f"onnxruntime engine: device {device!r}, expected one of {DEVICES}")
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ConfigError(
            f"onnxruntime engine: device 'cuda' asked for but this onnxruntime has only "
            f"{available} (install onnxruntime-gpu)"
        )
    use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
    providers = ["CUDAExecutionProvider"] * use_cuda + ["CPUExecutionProvider"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # fatal only: every error also raises, and the daemon logs it once, with the part it hit
    # (ONNX Runtime's own copy is a multi-line, colour-coded stderr dump per failing part)
    so.log_severity_level = 4
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    return session, "cuda" if use_cuda else "cpu"


class OnnxRuntimeEngine(Engine):
    """Options: ``device`` auto|cpu|cuda (auto = CUDA when the provider exists), ``threads``
    (intra-op threads, default ONNX Runtime's choice), ``onnx_file`` (a bundle file, default
    model.onnx)."""

    kind = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        threads: int | None = None,
        onnx_file: str = ONNX_FILE,
        **opts: Any,
    ) -> None:
        super().__init__(bundle, **opts)
        self.threads = threads
        self.onnx_file = onnx_file
        self.session, self.device = open_session(bundle.file(onnx_file), device, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def name(self) -> str:
        t = f",{self.threads}t" if self.threads else ""
        variant = "" if self.onnx_file == ONNX_FILE else f",{self.onnx_file}"
        return f"onnxruntime[{self.device}{t}{variant}]"

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.session.run(self.output_names, {self.input_name: batch})
        return maps, scores

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
