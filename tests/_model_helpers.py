"""Tiny generated multi-light image sets for the model tests (no renderer needed).

A part is a smooth height field (a dome plus low-frequency ripples) shaded under N directional
lights; a planted defect is a small pit that only the low-angle lights reveal strongly.
"""

from __future__ import annotations

import numpy as np

from afrd.data.imageset import ImageSet

LIGHTS = ("ring_all", "ring_bottom", "ring_right", "ring_top", "ring_left", "box")
_DIRS = {  # (azimuth deg, elevation deg); None = diffuse
    "ring_all": None,
    "ring_bottom": (270, 25),
    "ring_right": (0, 25),
    "ring_top": (90, 25),
    "ring_left": (180, 25),
    "box": None,
}


def make_set(seed: int, size: int = 64, defect: bool = False, lights=LIGHTS) -> ImageSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = rng.uniform(0, 2 * np.pi, 2)
    h = 0.6 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.08)
    h += 0.05 * np.sin(2 * np.pi * 3 * xx + phase[0]) * np.sin(2 * np.pi * 3 * yy + phase[1])
    mask = np.zeros((size, size), np.uint8)
    if defect:
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        r = size // 8
        d2 = ((yy * size - cy) ** 2 + (xx * size - cx) ** 2) / r**2
        h -= 0.25 * np.exp(-d2 * 2)
        mask[d2 < 1] = 1
    gy, gx = np.gradient(h * size / 8)
    n = np.stack([-gx, -gy, np.ones_like(h)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    albedo = np.array([0.8, 0.55, 0.35], np.float32)
    images = []
    for name in lights:
        d = _DIRS.get(name)
        if d is None:
            shade = 0.25 + 0.65 * n[..., 2]
        else:
            az, el = np.deg2rad(d[0]), np.deg2rad(d[1])
            v = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            shade = 0.1 + 1.2 * np.clip(n @ v, 0, None)
        img = shade[..., None] * albedo + rng.normal(0, 0.01, (size, size, 3))
        images.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return ImageSet(
        images=np.stack(images),
        lights=tuple(lights),
        part_id=f"p{seed}",
        product="tiny",
        label=int(defect),
        mask=mask if defect else np.zeros_like(mask),
    )


def make_sets(n: int, size: int = 64, defect: bool = False, seed0: int = 0) -> list[ImageSet]:
    return [make_set(seed0 + i, size, defect) for i in range(n)]
