"""The renderer's parts: categories, materials, defect names and the canonical (unposed) maps
each category builder draws (see ``afrd.data.render`` for posing, defects and shading)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# ----------------------------------------------------------------------------------------------
# Categories and defects

CATEGORIES: tuple[str, ...] = ("button", "plate", "cookie", "gummy")
MATERIAL: dict[str, str] = {
    "button": "glossy",  # moulded plastic sewing button with four holes
    "plate": "matte",  # bead-blasted, brushed metal plate with four studs
    "cookie": "textured",  # bumpy golden biscuit with raised chocolate chips
    "gummy": "translucent",  # gummy bear: subsurface-scattered, glossy, soft shading
}
DEFECTS: dict[str, tuple[str, ...]] = {
    "geometric": ("dent", "bump", "scratch"),
    "albedo": ("stain", "discolouration"),
    "gloss": ("matte_patch", "glossy_patch"),
    "logical": ("missing", "misplaced"),
}
DEFECT_TYPE: dict[str, str] = {name: kind for kind, names in DEFECTS.items() for name in names}
ALL_DEFECTS: tuple[str, ...] = tuple(DEFECT_TYPE)  # the names the default draws use
# Logical defects beyond missing/misplaced (afrd.data.logical): asked for by name or by
# ``afrd synth --logical``, never drawn by "any"/"logical", so data rendered before they existed
# stays the same part for part.
LOGICAL_EXTRA: tuple[str, ...] = ("extra", "count", "swapped", "wrong_colour")
DEFECT_TYPE.update(dict.fromkeys(LOGICAL_EXTRA, "logical"))


@dataclass
class Part:
    """One synthetic part at its native resolution ``size`` x ``size``.

    ``height`` is in pixels, ``albedo`` in [0, 1] RGB, ``ks`` the specular strength,
    ``shininess`` the Blinn-Phong exponent, ``mask`` the defect's pixels (uint8 0/1).
    """

    category: str
    seed: int
    height: np.ndarray  # [H, W] float32, pixels
    albedo: np.ndarray  # [H, W, 3] float32
    ks: np.ndarray  # [H, W] float32
    shininess: np.ndarray  # [H, W] float32
    translucency: float
    mask: np.ndarray  # [H, W] uint8
    label: int
    defect: str | None = None
    defect_type: str | None = None
    meta: dict = field(default_factory=dict)
    _units: dict = field(default_factory=dict, repr=False, compare=False)
    _geom: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> int:
        return int(self.height.shape[0])


# ----------------------------------------------------------------------------------------------
# Small field helpers


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _noise(rng: np.random.Generator, n: int, sigma_px: float, aniso: float = 1.0) -> np.ndarray:
    """Smooth Gaussian noise with unit std; ``aniso`` stretches it along x (brushed metal)."""
    white = rng.standard_normal((n, n)).astype(np.float32)
    sx, sy = sigma_px * aniso, sigma_px
    f = cv2.GaussianBlur(white, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT)
    return f / (f.std() + 1e-8)


def _fractal(rng: np.random.Generator, n: int, base_px: float, octaves: int = 3) -> np.ndarray:
    out = np.zeros((n, n), np.float32)
    amp, tot = 1.0, 0.0
    for k in range(octaves):
        out += amp * _noise(rng, n, max(0.6, base_px / 2**k))
        tot += amp
        amp *= 0.5
    return out / tot


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(n, dtype=np.float32) + 0.5) / n) * 2.0 - 1.0
    u, v = np.meshgrid(c, c)
    return u, v


def _hsv_colour(rng: np.random.Generator, hue: float, sat: float, val: float) -> np.ndarray:
    hue = (hue + rng.normal(0, 0.015)) % 1.0
    sat = float(np.clip(sat + rng.normal(0, 0.04), 0, 1))
    val = float(np.clip(val + rng.normal(0, 0.04), 0.05, 1))
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.array(rgb, np.float32)


# ----------------------------------------------------------------------------------------------
# Category builders: canonical (unposed) maps from parameters drawn up front, so leaving out or
# moving one component (logical defects) changes nothing else.


@dataclass
class _Canon:
    height: np.ndarray  # normalised units (1 = half the image width)
    albedo: np.ndarray
    ks: np.ndarray
    shininess: np.ndarray
    cover: np.ndarray  # 0..1 object coverage


def _button_params(rng: np.random.Generator, n: int) -> dict:
    hue = rng.choice([0.0, 0.08, 0.15, 0.33, 0.58, 0.75, 0.92])
    ang0 = rng.uniform(0, 2 * np.pi)
    return {
        "R": 0.55 * (1 + rng.uniform(-0.03, 0.03)),
        "colour": _hsv_colour(rng, hue, 0.75, 0.75),
        "comps": [
            (0.2 * math.cos(ang0 + k * np.pi / 2), 0.2 * math.sin(ang0 + k * np.pi / 2))
            for k in range(4)
        ],
        "tex": _noise(rng, n, 6.0),
    }


def _button(p: dict, n: int, comps: list) -> _Canon:
    u, v = _grid(n)
    r = np.sqrt(u * u + v * v)
    R = p["R"]
    edge = _smoothstep(R, R - 0.05, r)
    h = edge * (0.05 + 0.06 * np.clip(1 - (r / R) ** 2, 0, 1))
    h += 0.035 * np.exp(-(((r - 0.86 * R) / 0.04) ** 2)) * edge
    cover = edge.copy()
    rh = 0.055
    for cx, cy in comps:
        d = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
        hole = _smoothstep(rh, rh - 0.015, d)
        h *= 1 - hole
        cover *= 1 - hole
    albedo = p["colour"][None, None, :] * (1 + 0.02 * p["tex"])[..., None]
    ks = np.full((n, n), 0.55, np.float32)
    sh = np.full((n, n), 70.0, np.float32)
    return _Canon(h, albedo, ks, sh, cover)


def _plate_params(rng: np.random.Generator, n: int) -> dict:
    a, b = 0.62 * rng.uniform(0.95, 1.05), 0.38 * rng.uniform(0.95, 1.05)
    return {
        "a": a,
        "b": b,
        "grey": float(rng.uniform(0.5, 0.62)),
        "tint": (1 + rng.normal(0, 0.03, 3)).astype(np.float32),
        "comps": [(sx * 0.38 * a / 0.62, sy * 0.18) for sx in (-1, 1) for sy in (-1, 1)],
        "brush": _noise(rng, n, 0.7, aniso=14.0),
        "mottle": _noise(rng, n, 10.0),
    }


def _plate(p: dict, n: int, comps: list) -> _Canon:
    u, v = _grid(n)
    rc = 0.08
    qx, qy = np.abs(u) - (p["a"] - rc), np.abs(v) - (p["b"] - rc)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    sdf = outside + np.minimum(np.maximum(qx, qy), 0) - rc
    bevel = np.clip(-sdf / 0.08, 0, 1)  # 0.05 rise over 0.08: a ~32 deg bevel
    h = 0.05 * bevel
    cover = _smoothstep(0.0, -0.01, sdf)
    albedo_l = p["grey"] * (1 + 0.05 * p["brush"] + 0.04 * p["mottle"])
    albedo = albedo_l[..., None] * p["tint"][None, None, :]
    rs = 0.07
    for cx, cy in comps:
        d = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
        stud = _smoothstep(rs, rs - 0.025, d)
        h = h + stud * (0.03 + 0.012 * np.clip(1 - (d / rs) ** 2, 0, 1))
        albedo = albedo * (1 - 0.15 * stud)[..., None]
    h = h + 0.0012 * p["brush"] * cover
    ks = np.full((n, n), 0.08, np.float32)
    sh = np.full((n, n), 10.0, np.float32)
    return _Canon(h, albedo, ks, sh, cover)


def _cookie_params(rng: np.random.Generator, n: int) -> dict:
    comps = []
    while len(comps) < 6:
        ang, rad = rng.uniform(0, 2 * np.pi), 0.38 * math.sqrt(rng.uniform(0.05, 1))
        c = (rad * math.cos(ang), rad * math.sin(ang))
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > 0.16**2 for o in comps):
            comps.append(c)
    return {
        "R": 0.56 * rng.uniform(0.96, 1.04),
        "wobble": [(rng.uniform(0.01, 0.03), k, rng.uniform(0, 2 * np.pi)) for k in (3, 5, 7)],
        "colour": _hsv_colour(rng, 0.09, 0.6, 0.82),
        "comps": comps,
        "chip_r": rng.uniform(0.045, 0.06, 6),
        "bumps": _fractal(rng, n, 5.0),
        "speckle": _noise(rng, n, 1.2),
    }


def _cookie(p: dict, n: int, comps: list) -> _Canon:
    u, v = _grid(n)
    r, th = np.sqrt(u * u + v * v), np.arctan2(v, u)
    R = p["R"] * (1 + sum(a * np.sin(k * th + ph) for a, k, ph in p["wobble"]))
    edge = _smoothstep(R, R - 0.05, r)
    rr = np.clip(r / R, 0, 1)
    h = edge * (0.045 + 0.035 * (1 - rr**2)) + 0.006 * p["bumps"] * edge
    shade = 0.78 + 0.22 * (1 - rr**4) - 0.08 * np.clip(p["speckle"], 0, None)
    albedo = p["colour"][None, None, :] * shade[..., None]
    ks = np.full((n, n), 0.03, np.float32)
    sh = np.full((n, n), 5.0, np.float32)
    chip_col = np.array([0.2, 0.11, 0.06], np.float32)
    for (cx, cy), rc in zip(comps, p["chip_r"], strict=False):
        d = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
        chip = _smoothstep(rc, rc - 0.02, d)
        h = h + 0.028 * chip * np.sqrt(np.clip(1 - (d / rc) ** 2, 0, 1))
        albedo = albedo * (1 - chip[..., None]) + chip_col * chip[..., None]
        ks = ks + 0.22 * chip
        sh = sh + 20 * chip
    return _Canon(h, albedo, ks, sh, edge)


_GUMMY_LOBES = [  # (cx, cy, rx, ry, height): body, head, then components ears/arms/legs
    (0.0, 0.12, 0.30, 0.36, 0.12),
    (0.0, -0.34, 0.22, 0.22, 0.11),
]
_GUMMY_COMPS = [
    (-0.16, -0.52, 0.08, 0.08, 0.06),
    (0.16, -0.52, 0.08, 0.08, 0.06),
    (-0.30, -0.02, 0.11, 0.11, 0.07),
    (0.30, -0.02, 0.11, 0.11, 0.07),
    (-0.20, 0.46, 0.13, 0.13, 0.08),
    (0.20, 0.46, 0.13, 0.13, 0.08),
]


def _gummy_params(rng: np.random.Generator, n: int) -> dict:
    hue = rng.choice([0.0, 0.08, 0.14, 0.3, 0.95])
    return {
        "colour": _hsv_colour(rng, hue, 0.85, 0.72),
        "comps": [(c[0], c[1]) for c in _GUMMY_COMPS],
        "tex": _noise(rng, n, 3.0),
    }


def _gummy(p: dict, n: int, comps: list) -> _Canon:
    u, v = _grid(n)
    h = np.zeros((n, n), np.float32)
    cover = np.zeros((n, n), np.float32)
    lobes = list(_GUMMY_LOBES)
    for i, (cx, cy) in enumerate(comps):  # an extra component (logical) takes an ear's size
        if cx is not None:
            lobes.append((cx, cy) + _GUMMY_COMPS[i % len(_GUMMY_COMPS)][2:])
    for cx, cy, rx, ry, a in lobes:
        d2 = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
        h = np.maximum(h, a * np.sqrt(np.clip(1 - d2, 0, 1)))
        cover = np.maximum(cover, _smoothstep(1.0, 0.9, np.sqrt(d2)))
    sig = n / 128.0
    h = cv2.GaussianBlur(h, (0, 0), sig) + 0.0015 * p["tex"] * cover
    albedo = p["colour"][None, None, :] * (1 + 0.02 * p["tex"])[..., None] * np.ones((n, n, 1))
    ks = np.full((n, n), 0.5, np.float32)
    sh = np.full((n, n), 50.0, np.float32)
    return _Canon(h, albedo.astype(np.float32), ks, sh, cover)


_BUILDERS = {
    "button": (_button_params, _button, 0.0),
    "plate": (_plate_params, _plate, 0.0),
    "cookie": (_cookie_params, _cookie, 0.0),
    "gummy": (_gummy_params, _gummy, 0.5),
}
