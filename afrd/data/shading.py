"""Lamps, lighting setups and shading of the multi-light renderer (see ``afrd.data.render``).

Lamps are fixed in the camera frame (so a part's pose changes what each lamp reveals):

* ``ring_bottom|right|top|left``: directional spotlights at low elevation (25 deg) raking in
  from one side of the image, with a mild spot falloff across the field and hard-ish
  self-shadowing from a horizon test along the lamp's azimuth.
* ``box_1..box_4``: the light box's four diffuse panels, high (55 deg) at the four image corners,
  each an area light integrated over five directions, shadowed by ambient occlusion only.

Each lamp's response is precomputed once per part (a float32 HxWx3 image at intensity 1.0, in
digital numbers), so an image is a weighted sum of lamp responses.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from afrd.data.lights import DEFAULT_LIGHTS
from afrd.data.parts import Part, _grid

# ----------------------------------------------------------------------------------------------
# Lamps and lighting setups

RING_ELEVATION_DEG = 25.0
BOX_ELEVATION_DEG = 45.0
DN_SCALE = 255.0  # a white Lambertian surface facing a lamp of radiance 1 reads 255 DN

_RING_DIRS = {  # unit azimuth vector (x right, y down) pointing from the part to the lamp
    "ring_bottom": (0.0, 1.0),
    "ring_right": (1.0, 0.0),
    "ring_top": (0.0, -1.0),
    "ring_left": (-1.0, 0.0),
}
_S = 1.0 / math.sqrt(2.0)
_BOX_DIRS = {
    "box_1": (-_S, -_S),  # top-left
    "box_2": (_S, -_S),  # top-right
    "box_3": (_S, _S),  # bottom-right
    "box_4": (-_S, _S),  # bottom-left
}
RING_LAMPS: tuple[str, ...] = tuple(_RING_DIRS)
BOX_LAMPS: tuple[str, ...] = tuple(_BOX_DIRS)
LAMPS: tuple[str, ...] = RING_LAMPS + BOX_LAMPS

# Radiance per lamp at intensity 1.0, chosen so every setup is well exposed: a white flat
# surface reads ~110 DN under one ring lamp (facing slopes far more), ~170 under all four (at
# 0.4), ~250 under the box.
_RING_RADIANCE = 1.0
_BOX_RADIANCE = 0.35
_AMBIENT = 0.04  # fraction of each lamp's light that reaches everything as inter-reflection

LIGHT_SETUPS: dict[str, dict[str, float]] = {
    "ring_all": {lamp: 0.4 for lamp in RING_LAMPS},
    "ring_bottom": {"ring_bottom": 1.0},
    "ring_right": {"ring_right": 1.0},
    "ring_top": {"ring_top": 1.0},
    "ring_left": {"ring_left": 1.0},
    "box": {lamp: 1.0 for lamp in BOX_LAMPS},
}
assert set(LIGHT_SETUPS) == set(DEFAULT_LIGHTS)


# ----------------------------------------------------------------------------------------------
# Shading


def _tan(deg: float) -> float:
    return math.tan(math.radians(deg))


def _normals(height_px: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(height_px.astype(np.float32))
    nrm = np.stack([-gx, -gy, np.ones_like(gx)], axis=-1)
    return (nrm / np.linalg.norm(nrm, axis=-1, keepdims=True)).astype(np.float32)


def _ring_vectors(lamp: str, elev: float = RING_ELEVATION_DEG) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = _RING_DIRS[lamp]
    ce, se = math.cos(math.radians(elev)), math.sin(math.radians(elev))
    lv = np.array([ce * dx, ce * dy, se], np.float32)
    hv = lv + np.array([0, 0, 1], np.float32)
    return lv, (hv / np.linalg.norm(hv)).astype(np.float32)


def _box_half_vector(lamp: str) -> np.ndarray:
    dx, dy = _BOX_DIRS[lamp]
    ce, se = math.cos(math.radians(BOX_ELEVATION_DEG)), math.sin(math.radians(BOX_ELEVATION_DEG))
    hv = np.array([ce * dx, ce * dy, se + 1.0], np.float32)
    return hv / np.linalg.norm(hv)


_ROT_K = {(1.0, 0.0): 0, (0.0, -1.0): -1, (-1.0, 0.0): 2, (0.0, 1.0): 1}


def _horizon_lit(
    height_px: np.ndarray, azimuth: tuple[float, float], tan_e: float, soft: float = 0.75
) -> np.ndarray:
    """Self-shadowing for a directional lamp along an image axis: 1 lit, 0 in shadow.

    Rotate so the lamp is to the right; a pixel at column j is shadowed when some pixel j' > j
    rises above the ray, i.e. when max_{j'>j} (h_j' - j' tan e) exceeds h_j - j tan e.
    """
    k = _ROT_K[azimuth]
    h = np.rot90(height_px, k)
    j = np.arange(h.shape[1], dtype=np.float32)
    u = h - j[None, :] * tan_e
    suffix = np.maximum.accumulate(u[:, ::-1], axis=1)[:, ::-1]
    block = np.concatenate([suffix[:, 1:], np.full((h.shape[0], 1), -np.inf, np.float32)], 1)
    lit = np.clip(1.0 - (block - u) / soft, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(np.rot90(lit, -k))


def _geometry(part: Part) -> dict:
    g = part._geom
    if not g:
        n = part.size
        g["n"] = _normals(part.height)
        blur = cv2.GaussianBlur(part.height, (0, 0), max(1.0, 6 * n / 256))
        g["ao"] = np.clip(1.0 - 0.12 * np.maximum(blur - part.height, 0), 0.4, 1.0)
        u, v = _grid(n)
        g["u"], g["v"] = u, v
    return g


def _translucent(part: Part, irr: np.ndarray) -> np.ndarray:
    """Subsurface look: a fraction of the light entering re-emerges blurred (soft shading,
    light bleeding into shadows); energy is conserved, so it stays linear and exposure-neutral."""
    t = part.translucency
    if t <= 0:
        return irr
    sig = max(1.0, 3.5 * part.size / 128)
    return (1 - t) * irr + t * cv2.GaussianBlur(irr, (0, 0), sig)


def lamp_response(part: Part, lamp: str) -> np.ndarray:
    """The part under ``lamp`` alone at intensity 1.0: float32 [H, W, 3] DN, no noise."""
    if lamp in part._units:
        return part._units[lamp]
    if lamp not in LAMPS:
        raise ValueError(f"unknown lamp {lamp!r}: expected one of {list(LAMPS)}")
    g = _geometry(part)
    nrm = g["n"]
    if lamp in _RING_DIRS:
        dx, dy = _RING_DIRS[lamp]
        lv, hv = _ring_vectors(lamp)
        falloff = np.clip(1.0 + 0.25 * (g["u"] * dx + g["v"] * dy), 0.2, None) * _RING_RADIANCE
        shadow = _horizon_lit(part.height, (dx, dy), _tan(RING_ELEVATION_DEG))
        cos_l = nrm @ lv
        e = falloff * shadow
        irr = e * np.clip(cos_l, 0, None)
        spec = part.ks * np.clip(nrm @ hv, 0, 1) ** part.shininess * np.clip(cos_l * 8, 0, 1) * e
        diffuse = _translucent(part, irr)
        amb = _AMBIENT * _RING_RADIANCE * g["ao"]
    else:
        dx, dy = _BOX_DIRS[lamp]
        falloff = np.clip(1.0 + 0.1 * (g["u"] * dx + g["v"] * dy), 0.2, None) * _BOX_RADIANCE
        irr = np.zeros(part.height.shape, np.float32)
        spec_lobe = np.zeros_like(irr)
        # The panel spans about +-12 deg; five samples with the lobe capped at 60 integrate it
        # without dotted highlights.
        shin = np.minimum(part.shininess, 60.0)
        samples = [(0, 0), (-12, 0), (12, 0), (0, -10), (0, 10)]
        az0 = math.atan2(dy, dx)
        for daz, delv in samples:
            az, el = az0 + math.radians(daz), math.radians(BOX_ELEVATION_DEG + delv)
            lv = np.array(
                [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)], np.float32
            )
            hv = lv + np.array([0, 0, 1], np.float32)
            hv /= np.linalg.norm(hv)
            cos_l = nrm @ lv
            irr += np.clip(cos_l, 0, None)
            spec_lobe += np.clip(nrm @ hv, 0, 1) ** shin * np.clip(cos_l * 8, 0, 1)
        k = len(samples)
        e = falloff * g["ao"]
        irr = irr * e / k
        spec = part.ks * spec_lobe * e / k
        diffuse = _translucent(part, irr)
        amb = _AMBIENT * _BOX_RADIANCE * g["ao"]
    out = part.albedo * (diffuse + amb)[..., None] + spec[..., None]
    out = (out * DN_SCALE).astype(np.float32)
    part._units[lamp] = out
    return out
