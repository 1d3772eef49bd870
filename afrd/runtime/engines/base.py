"""The one engine interface: load a bundle, warm up, infer image sets, report timings.

Every backend computes the same function (the bundle's ONNX graph, or the model it came from):
uint8 [B,N,H,W,3] -> anomaly maps [B,H,W] float32 and scores [B] float32. What is common lives
here: checking the light count, the bundle's declared pre-processing (registration to the
product's reference pose, ``afrd.data.register``: one implementation for every engine, the maps
warped back to the captured pose so overlays sit on the frame), resizing frames to the bundle's
input size (cv2) and timing.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from afrd.data.register import register_batch, warp_back
from afrd.errors import DataError
from afrd.runtime.bundle import Bundle


class Engine(ABC):
    """Base class of every backend. Subclasses implement :meth:`_run` on a prepared batch."""

    kind: str = "base"

    def __init__(self, bundle: Bundle, **opts: Any) -> None:
        self.bundle = bundle
        self.opts = opts
        self.input_size = bundle.input_size
        self.n_lights = len(bundle.lights)
        self.registration = bundle.registration
        # per-call timings of the last infer() in milliseconds: prepare (resize/copy), run, total
        self.last_timings: dict[str, float] = {}

    @property
    def name(self) -> str:
        """Backend plus the detail that matters for timings, e.g. 'onnxruntime[cpu,2t]'."""
        return self.kind

    # ---- public API ------------------------------------------------------------------------------
    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images uint8 [N,H,W,3] (one part) or [B,N,H,W,3] -> (maps [B,H,W], scores [B])."""
        t0 = time.perf_counter()
        batch = self.prepare(images)
        matrices = None
        if self.registration is not None:  # RegistrationError: the part gets an error verdict
            # after the resize, as train and eval register sets loaded at the model's size
            batch, matrices = register_batch(self.registration, batch, self.bundle.lights)
        t1 = time.perf_counter()
        maps, scores = self._run(batch)
        t2 = time.perf_counter()
        maps = np.asarray(maps, dtype=np.float32)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if matrices is not None:
            hw = batch.shape[2:4]
            maps = np.stack([warp_back(m, a, hw) for m, a in zip(maps, matrices, strict=True)])
        self.last_timings = {
            "prepare_ms": (t1 - t0) * 1e3,
            "run_ms": (t2 - t1) * 1e3,
            "total_ms": (time.perf_counter() - t0) * 1e3,
            "batch": float(batch.shape[0]),
        }
        return maps, scores

    def warmup(self, iterations: int = 2, batch: int = 1) -> None:
        """Run a few throw-away inferences (allocations, kernel selection, lazy init)."""
        h, w = self.input_size
        x = np.zeros((batch, self.n_lights, h, w, 3), dtype=np.uint8)
        for _ in range(max(1, iterations)):
            self._run(x)

    def close(self) -> None:
        """Release sessions/contexts. Safe to call twice."""
        self.last_timings = {}

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- shared preprocessing ----------------------------------------------------------------------
    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Check shape/dtype/light count; resize to the bundle input size; contiguous [B,N,h,w,3]."""
        x = np.asarray(images)
        if x.ndim == 4:
            x = x[None]
        if x.ndim != 5 or x.shape[-1] != 3:
            raise DataError(
                f"engine {self.name}: images must be [N,H,W,3] or [B,N,H,W,3], got shape {x.shape}"
            )
        if x.dtype != np.uint8:
            raise DataError(f"engine {self.name}: images must be uint8, got {x.dtype}")
        if x.shape[1] != self.n_lights:
            raise DataError(
                f"engine {self.name}: bundle {self.bundle.name} expects {self.n_lights} images "
                f"(lights {list(self.bundle.lights)}), got {x.shape[1]}"
            )
        h, w = self.input_size
        if x.shape[2:4] != (h, w):
            x = resize_sets(x, (h, w))
        return np.ascontiguousarray(x)

    @abstractmethod
    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """batch: uint8 [B,N,h,w,3] at the bundle input size -> (maps [B,h,w], scores [B])."""


def resize_sets(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize every frame of uint8 [B,N,H,W,3] to ``size`` (h, w) with cv2 INTER_AREA/LINEAR."""
    import cv2

    h, w = size
    b, n, sh, sw, _ = x.shape
    interp = cv2.INTER_AREA if (sh > h and sw > w) else cv2.INTER_LINEAR
    out = np.empty((b, n, h, w, 3), dtype=np.uint8)
    for i in range(b):
        for j in range(n):
            out[i, j] = cv2.resize(x[i, j], (w, h), interpolation=interp)
    return out
