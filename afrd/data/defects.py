"""Defects planted into a posed part's maps (see ``afrd.data.render`` for what each shows).

* geometric (dent, bump, scratch): the height field -> normals and shadows.
* albedo (stain, discolouration): the albedo.
* gloss (matte_patch, glossy_patch): ks and shininess, placed where one ring lamp's specular lobe
  falls (``part.meta["specular_lamp"]``) and the box panels' does not.
* logical (missing, misplaced) are chosen here but built by ``afrd.data.render.sample_part``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from afrd.data.parts import DEFECT_TYPE, DEFECTS, MATERIAL, _noise, _smoothstep
from afrd.data.shading import (
    _BOX_RADIANCE,
    _RING_DIRS,
    _RING_RADIANCE,
    BOX_LAMPS,
    RING_ELEVATION_DEG,
    RING_LAMPS,
    _box_half_vector,
    _horizon_lit,
    _normals,
    _ring_vectors,
    _tan,
)


def _resolve_defect(defect: str | None, category: str, rng: np.random.Generator) -> str | None:
    if defect is None:
        return None
    if defect == "any":
        defect = str(rng.choice(list(DEFECTS)))
    if defect in DEFECTS:
        if defect == "gloss":  # the patch that contrasts with the material
            return (
                "matte_patch" if MATERIAL[category] in ("glossy", "translucent") else "glossy_patch"
            )
        return str(rng.choice(DEFECTS[defect]))
    if defect not in DEFECT_TYPE:
        raise ValueError(
            f"unknown defect {defect!r}: expected None, 'any', a type {sorted(DEFECTS)} "
            f"or a name {sorted(DEFECT_TYPE)}"
        )
    return defect


def _pick_centre(
    rng: np.random.Generator, ok: np.ndarray, weight: np.ndarray | None = None, top: float = 0.03
):
    ys, xs = np.nonzero(ok)
    if len(ys) == 0:  # degenerate (tiny image): anywhere
        n = ok.shape[0]
        return n // 2, n // 2
    if weight is None:
        i = int(rng.integers(len(ys)))
    else:
        w = weight[ys, xs].astype(np.float64)
        top = w >= np.quantile(w, 1 - top)
        cand = np.nonzero(top)[0]
        i = int(cand[rng.integers(len(cand))])
    return int(ys[i]), int(xs[i])


def _blob(rng: np.random.Generator, n: int, cy: int, cx: int, r_px: float) -> np.ndarray:
    """Irregular soft blob (0..1) of radius ~r_px around (cy, cx)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / r_px
    wob = _noise(rng, n, max(1.0, r_px / 3))
    return _smoothstep(1.05, 0.8, d + 0.25 * wob)


def _apply_surface_defect(name, rng, height, albedo, ks, shin, cover, translucency):
    n = height.shape[0]
    px = n / 128.0  # sizes are given at 128 px and scale with the image
    inner = cv2.erode(
        (cover > 0.99).astype(np.uint8),
        np.ones((3, 3), np.uint8),
        iterations=max(1, int(round(9 * px))),
    )
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    extra: dict = {}
    if name in ("dent", "bump"):
        cy, cx = _pick_centre(rng, inner > 0)
        sx, sy = rng.uniform(2.2, 3.4, 2) * px
        ang = rng.uniform(0, np.pi)
        xr = (x - cx) * math.cos(ang) + (y - cy) * math.sin(ang)
        yr = -(x - cx) * math.sin(ang) + (y - cy) * math.cos(ang)
        g = np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))
        depth = rng.uniform(1.0, 1.4) * px * (1 if name == "bump" else -1)
        height = height + depth * g
        mask = g > 0.2
    elif name == "scratch":
        cy, cx = _pick_centre(rng, inner > 0)
        ang = rng.uniform(0, np.pi)
        half = rng.uniform(9, 16) * px
        dx, dy = math.cos(ang), math.sin(ang)
        t = np.clip((x - cx) * dx + (y - cy) * dy, -half, half)
        d = np.sqrt((x - cx - t * dx) ** 2 + (y - cy - t * dy) ** 2)
        w = 0.8 * px
        g = np.exp(-0.5 * (d / w) ** 2)
        height = height - rng.uniform(0.8, 1.1) * px * g
        mask = d < 1.8 * w + 0.5
    elif name in ("stain", "discolouration"):
        cy, cx = _pick_centre(rng, inner > 0)
        r = rng.uniform(4, 6.5) * px if name == "stain" else rng.uniform(6, 9) * px
        b = _blob(rng, n, cy, cx, r)
        if name == "stain":
            tint = np.array([0.5, 0.42, 0.32], np.float32) * rng.uniform(0.9, 1.1)
            new = albedo * tint
        else:  # a hue shift at roughly constant brightness (heat tint, bleaching, dye)
            tints = ([1.45, 0.95, 0.5], [0.55, 0.95, 1.5], [0.7, 1.4, 0.8], [1.4, 0.6, 1.1])
            tint = np.array(tints[int(rng.integers(len(tints)))], np.float32)
            new = np.clip(albedo * tint + 0.06 * (tint - 1), 0, 1)
        albedo = albedo * (1 - b[..., None]) + new * b[..., None]
        mask = b > 0.3
    elif name in ("matte_patch", "glossy_patch"):
        new_ks, new_sh = (0.04, 8.0) if name == "matte_patch" else (0.75, 60.0)
        lobe_sh = np.maximum(shin, new_sh)
        nrm = _normals(height)
        best = np.zeros((n, n), np.float32)
        which = np.zeros((n, n), np.int64)
        for i, lamp in enumerate(RING_LAMPS):
            l_vec, h_vec = _ring_vectors(lamp)
            lobe = np.clip(nrm @ h_vec, 0, 1) ** lobe_sh * (nrm @ l_vec > 0.05) * cover
            lobe = lobe * _horizon_lit(height, _RING_DIRS[lamp], _tan(RING_ELEVATION_DEG))
            better = lobe > best
            best = np.where(better, lobe, best)
            which = np.where(better, i, which)
        # bevels and rims catch the ring highlights: only keep clear of the outline
        near = cv2.erode(
            (cover > 0.99).astype(np.uint8),
            np.ones((3, 3), np.uint8),
            iterations=max(1, int(round(3 * px))),
        )
        r = rng.uniform(5, 7.5) * px
        # where one ring lamp's highlight falls and the box panels' do not
        box = np.zeros((n, n), np.float32)
        for lamp in BOX_LAMPS:
            box += np.clip(nrm @ _box_half_vector(lamp), 0, 1) ** lobe_sh
        weight = best * _RING_RADIANCE - box * _BOX_RADIANCE
        cy, cx = _pick_centre(
            rng, near > 0, weight=cv2.GaussianBlur(weight, (0, 0), r / 2), top=0.005
        )
        b = _blob(rng, n, cy, cx, r)
        ks = ks * (1 - b) + new_ks * b
        shin = shin * (1 - b) + new_sh * b
        mask = b > 0.3
        extra["specular_lamp"] = RING_LAMPS[int(which[cy, cx])]
    else:  # pragma: no cover - guarded by _resolve_defect
        raise ValueError(name)
    extra["centre"] = (int(cy), int(cx))
    return height, albedo, ks, shin, (mask & (cover > 0.5)).astype(np.uint8), extra
