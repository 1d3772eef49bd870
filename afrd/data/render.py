"""Physically grounded multi-light renderer of synthetic parts in a light box.

A part is a height field, an RGB albedo, a specular strength ``ks`` and a Blinn-Phong exponent
``shininess`` (per pixel), plus a translucency scalar. The camera looks straight down
(orthographic, view vector +z); image x runs right, y runs down, z points at the camera.

Lamps (fixed in the camera frame, so a part's pose changes what each lamp reveals):

* ``ring_bottom|right|top|left``: directional spotlights at low elevation (25 deg) raking in
  from one side of the image, with a mild spot falloff across the field and hard-ish
  self-shadowing from a horizon test along the lamp's azimuth.
* ``box_1..box_4``: the light box's four diffuse panels, high (55 deg) at the four image corners,
  each an area light integrated over five directions, shadowed by ambient occlusion only.

Each lamp's response is precomputed once per part (a float32 HxWx3 image at intensity 1.0, in
digital numbers), so an image is a weighted sum of lamp responses: linear in lamp intensity
until sensor noise and 8-bit clipping are applied. ``LIGHT_SETUPS`` gives the lamp intensities
of the six named lighting setups (``afrd.data.lights.DEFAULT_LIGHTS``).

What each defect changes, and so under which light it shows:

* geometric (dent, bump, scratch): the height field -> normals and shadows. A raking single ring
  lamp turns a small tilt into a large change of n.l; the four symmetric box panels cancel the
  first-order tilt term, so diffuse light shows it faintly.
* albedo (stain, discolouration): the albedo -> strongest under the brightest, most even
  irradiance: the light box.
* gloss (matte_patch, glossy_patch): ks and shininess -> only where a lamp's half vector meets
  the surface normal. The patch is placed where one ring lamp's specular lobe falls
  (``part.meta["specular_lamp"]``), whose reflection the box panels do not reach.
* logical (missing, misplaced): one of the part's components (hole, stud, chip, limb) is left
  out or moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS

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
ALL_DEFECTS: tuple[str, ...] = tuple(DEFECT_TYPE)


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
    for (cx, cy), base in zip(comps, _GUMMY_COMPS, strict=False):
        if cx is not None:
            lobes.append((cx, cy) + base[2:])
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


# ----------------------------------------------------------------------------------------------
# Part sampling


def _pose_matrix(n: int, theta: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c = (n - 1) / 2.0
    rot = scale * np.array(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], np.float64
    )
    t = np.array([c, c]) - rot @ np.array([c, c]) + np.array([tx, ty]) * n / 2.0
    return np.hstack([rot, t[:, None]])


def _warp(a: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
    return cv2.warpAffine(
        np.ascontiguousarray(a, dtype=np.float32),
        m,
        (n, n),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *stream])


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


# How far a part's pose varies between samples, as fractions of the "free" draw: "free" is a part
# dropped anywhere in the view at any rotation (Eyecandies-like); "fixtured" is a part held in a
# nest on the line, as an inline inspection cell images it (about +-4 deg, +-2% scale, +-1.5%
# shift).
POSES: dict[str, tuple[float, float, float]] = {
    "free": (1.0, 1.0, 1.0),
    "fixtured": (4.0 / 180.0, 0.25, 0.3),
}


def sample_part(
    category: str, seed: int, defect: str | None = None, size: int = 256, pose: str = "free"
) -> Part:
    """Draw part ``seed`` of ``category``; ``defect`` is None (good), 'any', a type or a name.

    The same (category, seed, size) gives the same part with or without a defect, so the
    defect-free twin of a defective part is ``sample_part(category, seed, None, size)``. ``pose``
    (a key of POSES) only narrows the pose draw: everything else about the part is the same.
    """
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}: expected one of {list(CATEGORIES)}")
    if pose not in POSES:
        raise ValueError(f"unknown pose {pose!r}: expected one of {list(POSES)}")
    n = int(size)
    cat_idx = CATEGORIES.index(category)
    rng = _rng(seed, cat_idx, 0)
    params_fn, build, translucency = _BUILDERS[category]
    p = params_fn(rng, n)
    f_rot, f_scale, f_shift = POSES[pose]
    theta = rng.uniform(0, 2 * np.pi)
    if f_rot != 1.0:
        theta = (theta - np.pi) * f_rot
    scale = 1.0 + rng.uniform(-0.08, 0.08) * f_scale
    tx, ty = rng.uniform(-0.05, 0.05, 2) * f_shift
    gain = (1 + rng.normal(0, 0.03, 3)) * (1 + rng.normal(0, 0.05))
    bg_tex = _noise(rng, n, 2.0)
    bg_albedo = (0.12 + 0.01 * bg_tex)[..., None] * np.array([1.0, 1.0, 1.05], np.float32)
    bg_height = 0.0004 * bg_tex

    drng = _rng(seed, cat_idx, 1)
    name = _resolve_defect(defect, category, drng)
    comps = list(p["comps"])
    if name == "missing":
        k = int(drng.integers(len(comps)))
        comps[k] = (None, None) if category == "gummy" else (9.0, 9.0)
    elif name == "misplaced":
        k = int(drng.integers(len(comps)))
        ang, dist = drng.uniform(0, 2 * np.pi), drng.uniform(0.09, 0.14)
        comps[k] = (comps[k][0] + dist * math.cos(ang), comps[k][1] + dist * math.sin(ang))

    m = _pose_matrix(n, theta, scale, tx, ty)
    canon = build(p, n, comps)
    cover = np.clip(_warp(canon.cover, m, n), 0, 1)
    height = _warp(canon.height, m, n) * scale * (n / 2.0) + bg_height * (n / 2.0)
    cc = canon.cover
    alb_obj = _warp(canon.albedo * cc[..., None], m, n) * gain.astype(np.float32)
    albedo = alb_obj + (1 - cover[..., None]) * bg_albedo
    ks = _warp(canon.ks * cc, m, n) + (1 - cover) * 0.02
    shin = _warp(canon.shininess * cc, m, n) + (1 - cover) * 4.0
    albedo = np.clip(albedo, 0, 1).astype(np.float32)

    mask = np.zeros((n, n), np.uint8)
    meta: dict = {"pose": {"theta": theta, "scale": scale, "tx": float(tx), "ty": float(ty)}}
    if name in ("missing", "misplaced"):
        clean = build(p, n, list(p["comps"]))
        c_cover = np.clip(_warp(clean.cover, m, n), 0, 1)
        c_height = _warp(clean.height, m, n) * scale * (n / 2.0)
        dh = np.abs(height - bg_height * (n / 2.0) - c_height)
        mask = ((dh > 0.15 * n / 128.0) | (np.abs(cover - c_cover) > 0.2)).astype(np.uint8)
        meta["component"] = k
    elif name is not None:
        height, albedo, ks, shin, mask, extra = _apply_surface_defect(
            name, drng, height, albedo, ks, shin, cover, translucency
        )
        meta.update(extra)
    return Part(
        category=category,
        seed=int(seed),
        height=height.astype(np.float32),
        albedo=albedo.astype(np.float32),
        ks=np.clip(ks, 0, 1).astype(np.float32),
        shininess=np.maximum(shin, 1.0).astype(np.float32),
        translucency=translucency,
        mask=mask,
        label=int(name is not None),
        defect=name,
        defect_type=DEFECT_TYPE.get(name) if name else None,
        meta=meta,
    )


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


# ----------------------------------------------------------------------------------------------
# Rendering


def _size_hw(size: int | tuple[int, int] | None, native: int) -> tuple[int, int]:
    if size is None:
        return native, native
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def render_linear(part: Part, lamps: dict[str, float], size=None) -> np.ndarray:
    """Noise-free, unclipped float32 [H, W, 3] image in DN: exactly linear in ``lamps``."""
    acc = np.zeros(part.albedo.shape, np.float32)
    for lamp, level in lamps.items():
        if lamp not in LAMPS:
            raise ValueError(f"unknown lamp {lamp!r}: expected one of {list(LAMPS)}")
        if level:
            acc += np.float32(level) * lamp_response(part, lamp)
    h, w = _size_hw(size, part.size)
    if (h, w) != acc.shape[:2]:
        acc = cv2.resize(acc, (w, h), interpolation=cv2.INTER_AREA)
    return acc


READ_NOISE_DN = 1.5
SHOT_NOISE_DN_PER_DN = 0.06  # variance per DN of signal


def render(
    part: Part,
    lamps: dict[str, float],
    size: int | tuple[int, int] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The part under ``lamps`` (lamp name -> intensity, 1.0 nominal) as HxWx3 uint8 RGB.

    Linear in the intensities before sensor noise (shot + read, only when ``rng`` is given)
    and 8-bit clipping. ``size`` is an int (square) or (h, w); default the part's own size.
    """
    img = render_linear(part, lamps, size)
    if rng is not None:
        sigma = np.sqrt(READ_NOISE_DN**2 + SHOT_NOISE_DN_PER_DN * np.maximum(img, 0))
        img = img + sigma * _gaussian_noise(rng, img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


_NOISE_TABLE: np.ndarray | None = None


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit Gaussian noise: a random window of a fixed 4M-sample table, ~10x cheaper than
    drawing fresh samples for every frame; the rng picks the window, so noise stays seeded."""
    global _NOISE_TABLE
    if _NOISE_TABLE is None:
        _NOISE_TABLE = np.random.default_rng(12345).standard_normal(1 << 22, dtype=np.float32)
    size = int(np.prod(shape))
    if size > _NOISE_TABLE.size // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, _NOISE_TABLE.size - size))
    return _NOISE_TABLE[start : start + size].reshape(shape)


def render_set(
    part: Part,
    lights: tuple[str, ...] = DEFAULT_LIGHTS,
    rng: np.random.Generator | int | None = None,
    size: int | tuple[int, int] | None = None,
    noise: bool = True,
) -> ImageSet:
    """The part under each named lighting setup, as an ImageSet with its label and mask.

    ``rng`` None seeds the sensor noise from the part's seed, so a part renders identically
    every time; ``noise=False`` gives the noise-free images.
    """
    unknown = [name for name in lights if name not in LIGHT_SETUPS]
    if unknown:
        raise ValueError(f"unknown lights {unknown}: expected names from {list(LIGHT_SETUPS)}")
    if noise and not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng([part.seed & 0xFFFFFFFF, 99 if rng is None else int(rng)])
    images = np.stack(
        [render(part, LIGHT_SETUPS[name], size, rng if noise else None) for name in lights]
    )
    h, w = images.shape[1:3]
    mask = part.mask
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return ImageSet(
        images=images,
        lights=tuple(lights),
        part_id=f"{part.category}-{part.seed}",
        product=part.category,
        label=part.label,
        mask=mask.astype(np.uint8),
        meta={
            "defect": part.defect,
            "defect_type": part.defect_type,
            "synthetic": True,
            **{k: v for k, v in part.meta.items() if k != "pose"},
        },
    )
