"""PyTorch: the training model as an engine. The reference for parity and the GPU baseline.

CPU in float32; CUDA with fp16 (autocast) and channels-last by default. The model comes from the
checkpoint the bundle was exported from (its sha256 is checked against bundle.json, so the engine
runs the same weights as the ONNX graph) or is passed in directly (``model=``, benchmarks).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afrd.errors import BundleError, ConfigError
from afrd.runtime.bundle import Bundle, sha256_file
from afrd.runtime.engines.base import Engine


class PyTorchEngine(Engine):
    """Options: ``checkpoint`` (default: the one recorded in bundle.json), ``model`` (an AFRD
    instead of a checkpoint), ``device`` cpu|cuda|auto, ``fp16`` and ``channels_last`` (default:
    on for CUDA, off for CPU), ``threads`` (torch CPU threads)."""

    kind = "pytorch"

    def __init__(
        self,
        bundle: Bundle,
        checkpoint: str | os.PathLike | None = None,
        model: torch.nn.Module | None = None,
        device: str = "cpu",
        fp16: bool | None = None,
        channels_last: bool | None = None,
        threads: int | None = None,
        **opts: Any,
    ) -> None:
        super().__init__(bundle, **opts)
        from afrd.model.checkpoint import inference_module
        from afrd.model.inference import InferenceModel

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                "pytorch engine: device 'cuda' asked for but no CUDA device is visible"
            )
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise ConfigError(f"pytorch engine: device {device!r}, expected cpu, cuda or auto")
        self.device = torch.device(device)
        is_cuda = self.device.type == "cuda"
        self.fp16 = is_cuda if fp16 is None else bool(fp16)
        self.channels_last = is_cuda if channels_last is None else bool(channels_last)
        if self.fp16 and not is_cuda:
            raise ConfigError("pytorch engine: fp16 needs device cuda (CPU runs float32)")
        if threads:
            torch.set_num_threads(int(threads))
        self.threads = threads

        if model is None:
            model = self._load_model(bundle, checkpoint)
        net = model.module if hasattr(model, "module") else model
        # an AFRD gets an InferenceModel; the memory bank is its own (afrd.model.checkpoint)
        inference = model if isinstance(model, InferenceModel) else inference_module(net)
        inference = inference.eval().to(self.device)
        if self.channels_last:
            inference = inference.to(memory_format=torch.channels_last)
        self.model = inference

    @staticmethod
    def _load_model(bundle: Bundle, checkpoint: str | os.PathLike | None) -> torch.nn.Module:
        from afrd.model.checkpoint import load_checkpoint

        source = bundle.meta.get("source") or {}
        path = Path(checkpoint or source.get("checkpoint") or "")
        if not str(path) or not path.is_file():
            raise BundleError(
                f"bundle {bundle.path}: pytorch engine needs the checkpoint it was exported from; "
                f"{str(path) or 'none recorded'} does not exist (pass checkpoint=PATH)"
            )
        want = source.get("checkpoint_sha256")
        if want:
            got = sha256_file(path)
            if got != want:
                raise BundleError(
                    f"bundle {bundle.path}: checkpoint {path} sha256 {got} does not match the "
                    f"one the bundle was exported from ({want})"
                )
        model, _config = load_checkpoint(path)
        return model

    @property
    def name(self) -> str:
        bits = [self.device.type]
        if self.fp16:
            bits.append("fp16")
        if self.channels_last:
            bits.append("channels_last")
        if self.threads:
            bits.append(f"{self.threads}t")
        return f"pytorch[{','.join(bits)}]"

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        ctx = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if self.fp16 else nullcontext()
        )
        with ctx:
            maps, scores = self.model(x)
        maps = maps.float().cpu().numpy()
        scores = scores.float().cpu().numpy()
        return maps, scores

    def close(self) -> None:
        super().close()
        self.model = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
