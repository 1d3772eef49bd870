"""The opt-in ``lights.<cell>`` message: a small JPEG mosaic of one part's light images.

Opt-in (``[lights_preview]`` in the cell config, off by default), so a page or MES client can
show every part's lights, not only those the recorder kept. Built and sent by
:class:`LightsWorker` on its own thread after the part's result and heatmap are out: the output
thread only hands the part over (a one-slot queue; a part that finds it full gets no preview),
so encoding never delays this part's result or the next one's. Each light is downscaled to at most ``max_px`` on its longest
side and placed in a grid of ``columns`` tiles, in ``lights`` order, row by row.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from afrd.daemon.verdict import LIGHTS_SCHEMA, Job, _part_fields
from afrd.errors import AfrdError

COLUMNS = 3  # six lights -> 3 x 2

log = logging.getLogger("afrd.daemon.lights")


def mosaic(
    images: list[np.ndarray], max_px: int, columns: int = COLUMNS
) -> tuple[np.ndarray, int, int]:
    """RGB images (same size) -> (mosaic RGB, tile height, tile width); each tile <= ``max_px``."""
    import cv2

    h, w = images[0].shape[:2]
    k = min(1.0, max_px / max(h, w))
    th, tw = max(1, round(h * k)), max(1, round(w * k))
    rows = -(-len(images) // columns)
    out = np.zeros((rows * th, columns * tw, 3), np.uint8)
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.dtype != np.uint8:
            a = np.clip(a, 0, 255).astype(np.uint8)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.shape[:2] != (th, tw):
            a = cv2.resize(a, (tw, th), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, columns)
        out[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = a[:, :, :3]
    return out, th, tw


def lights_message(
    cell: str, job: Job, max_px: int = 160, quality: int = 80
) -> tuple[dict, bytes] | None:
    """The ``lights.<cell>`` JSON and JPEG mosaic of a job's image set (None without one)."""
    import cv2

    imageset: Any = job.imageset
    if imageset is None:
        return None
    lights = [str(n) for n in imageset.lights]
    img, th, tw = mosaic(list(imageset.images), max_px)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise AfrdError("could not encode the lights JPEG")
    msg = {
        **_part_fields(LIGHTS_SCHEMA, cell, job),
        "lights": lights,
        "columns": COLUMNS,
        "rows": img.shape[0] // th,
        "tile_width": tw,
        "tile_height": th,
        "width": img.shape[1],
        "height": img.shape[0],
        "format": "jpeg",
    }
    return msg, buf.tobytes()


class LightsWorker:
    """Encodes and publishes ``lights.<cell>`` off the output thread; drops rather than queues."""

    def __init__(
        self,
        cell: str,
        send: Callable[[dict, bytes], Any],
        observe: Callable[[str, float], None] = lambda _stage, _s: None,
    ) -> None:
        self.cell, self._send, self._observe = cell, send, observe
        self.dropped = 0  # parts that found the worker busy (no preview for them)
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="afrd-lights", daemon=True)
        self._thread.start()

    def submit(self, job: Job, max_px: int, quality: int) -> bool:
        """Hand one published part over; False (dropped) while the previous one is encoding."""
        try:
            self._q.put_nowait((job, max_px, quality))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            job, max_px, quality = item
            try:
                t0 = time.perf_counter()
                lm = lights_message(self.cell, job, max_px, quality)
                if lm is not None:
                    self._send(*lm)
                self._observe("lights", time.perf_counter() - t0)
            except Exception:  # a preview must never take the daemon down
                log.exception("part %s: lights preview failed", job.seq)

    def close(self) -> None:
        try:
            self._q.put(None, timeout=2)
        except queue.Full:
            pass
        self._thread.join(timeout=2)
