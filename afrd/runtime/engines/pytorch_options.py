"""The PyTorch engine's options, apart from the engine (``afrd.runtime.engines.pytorch``) so
checking a config imports no torch."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from afrd.runtime.engines.options import EngineOptions


class PyTorchOptions(EngineOptions):
    checkpoint: Path | None = None
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:[0-9]+)?)$")
    fp16: bool | None = None
    channels_last: bool | None = None
    threads: int | None = Field(None, ge=1, le=1024)
