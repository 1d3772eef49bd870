"""The ONNX Runtime engine's options (``afrd.runtime.engines.onnxruntime``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from afrd.runtime.engines.options import EngineOptions


class OnnxRuntimeOptions(EngineOptions):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024, description="intra-op threads")
    onnx_file: str = Field("model.onnx", description="a bundle file, e.g. model.int8.onnx")
