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

import cv2
import numpy as np

from afrd.data.defects import _apply_surface_defect, _resolve_defect
from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.data.logical import plan as plan_logical
from afrd.data.logical import recolour
from afrd.data.parts import (
    _BUILDERS,
    ALL_DEFECTS,
    CATEGORIES,
    DEFECT_TYPE,
    DEFECTS,
    LOGICAL_EXTRA,
    MATERIAL,
    Part,
    _noise,
)
from afrd.data.shading import (
    BOX_LAMPS,
    LAMPS,
    LIGHT_SETUPS,
    RING_LAMPS,
    lamp_response,
)

__all__ = [
    "ALL_DEFECTS",
    "BOX_LAMPS",
    "CATEGORIES",
    "DEFECTS",
    "DEFECT_TYPE",
    "LAMPS",
    "LIGHT_SETUPS",
    "MATERIAL",
    "POSES",
    "RING_LAMPS",
    "Part",
    "lamp_response",
    "render",
    "render_linear",
    "render_set",
    "sample_part",
]

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


# How far a part's pose varies between samples, as fractions (rotation, scale, shift) of the
# "free" draw: "free" is a part dropped anywhere in the view at any rotation (Eyecandies-like,
# +-2.5% shift); "conveyor" is a part lying on a belt or in a loose nest, guided but not held
# (about +-20 deg, +-2% scale, +-4% shift); "fixtured" is a part held in a nest on the line, as
# an inline inspection cell images it (about +-4 deg, +-2% scale, +-0.75% shift).
POSES: dict[str, tuple[float, float, float]] = {
    "free": (1.0, 1.0, 1.0),
    "conveyor": (20.0 / 180.0, 0.25, 1.6),
    "fixtured": (4.0 / 180.0, 0.25, 0.3),
}


def draw_look(rng: np.random.Generator, n: int, pose: str) -> tuple:
    """(theta, scale, tx, ty, gain, bg_albedo, bg_height): the pose, camera gain and background
    of one part, drawn from ``rng`` right after the category's parameters (``sample_part``;
    ``afrd.data.logical_family`` draws its parts' the same way)."""
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
    return theta, scale, tx, ty, gain, bg_albedo, bg_height


def place(canon, m: np.ndarray, n: int, look: tuple) -> tuple:
    """A canonical part (``afrd.data.parts._Canon``) posed by ``m`` on the background of
    ``look`` (``draw_look``): (cover, height, object albedo, albedo, ks, shininess)."""
    scale, gain, bg_albedo, bg_height = look[1], look[4], look[5], look[6]
    cover = np.clip(_warp(canon.cover, m, n), 0, 1)
    height = _warp(canon.height, m, n) * scale * (n / 2.0) + bg_height * (n / 2.0)
    cc = canon.cover
    alb_obj = _warp(canon.albedo * cc[..., None], m, n) * gain.astype(np.float32)
    albedo = alb_obj + (1 - cover[..., None]) * bg_albedo
    ks = _warp(canon.ks * cc, m, n) + (1 - cover) * 0.02
    shin = _warp(canon.shininess * cc, m, n) + (1 - cover) * 4.0
    albedo = np.clip(albedo, 0, 1).astype(np.float32)
    return cover, height, alb_obj, albedo, ks, shin


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
    look = draw_look(rng, n, pose)
    theta, scale, tx, ty, gain, bg_albedo, bg_height = look

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
    elif name in LOGICAL_EXTRA:  # afrd.data.logical
        p, comps, k = plan_logical(name, category, p, drng)

    m = _pose_matrix(n, theta, scale, tx, ty)
    canon = build(p, n, comps)
    if name == "wrong_colour":
        canon = recolour(canon, build, p, n, comps, k, category)
    cover, height, alb_obj, albedo, ks, shin = place(canon, m, n, look)

    mask = np.zeros((n, n), np.uint8)
    meta: dict = {"pose": {"theta": theta, "scale": scale, "tx": float(tx), "ty": float(ty)}}
    if DEFECT_TYPE.get(name) == "logical":
        clean = build(p, n, list(p["comps"]))  # p["comps"]: the part's own components
        c_cover = np.clip(_warp(clean.cover, m, n), 0, 1)
        c_height = _warp(clean.height, m, n) * scale * (n / 2.0)
        dh = np.abs(height - bg_height * (n / 2.0) - c_height)
        mask = (dh > 0.15 * n / 128.0) | (np.abs(cover - c_cover) > 0.2)
        if name == "wrong_colour":  # the colour is all that changed
            c_alb = _warp(clean.albedo * clean.cover[..., None], m, n) * gain.astype(np.float32)
            mask |= np.abs(alb_obj - c_alb).max(-1) > 0.05
        mask = mask.astype(np.uint8)
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
