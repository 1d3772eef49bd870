"""NullEngine: returns zero maps and scores at once. For measuring the daemon's own overhead
(acquisition, queues, publishing) without any model cost. Never use it on a line."""

from __future__ import annotations

import numpy as np

from afrd.runtime.engines.base import Engine


class NullEngine(Engine):
    kind = "null"

    @property
    def name(self) -> str:
        return "null(zero maps, no model)"

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = batch.shape[0]
        h, w = self.input_size
        return np.zeros((b, h, w), np.float32), np.zeros((b,), np.float32)
