"""The TensorRT engine's options (``afrd.runtime.engines.tensorrt``)."""

from __future__ import annotations

from pydantic import Field

from afrd.runtime.engines.options import EngineOptions


class TensorRTOptions(EngineOptions):
    device: int = Field(0, ge=0, le=64, description="CUDA device ordinal")
    engine_file: str | None = None
