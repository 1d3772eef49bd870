"""A logical test family no local model can see (issue 27): ``afrd synth --logical family``.

The renderer's own logical defects (``afrd.data.logical``: a hole left out, a stud moved) change
what a small window of the part looks like, so a local model (the memory bank) catches them.
Here every window of a defective part also occurs in good ones: the defect lives only in a
relation between components farther apart than the teacher's receptive field.

The product (category ``plate``, the renderer's bead-blasted plate, larger): a plate carrying
identical round studs, painted one colour per part (from ``PALETTE``). Its rule:

- **layout**: studs sit in two zones, left and right (|x| >= ``ZONE_X[0]``); the band between
  them is kept clear. Normal parts place their studs anywhere in the zones (positions and the
  split between zones vary), so a template of positions is not enough.
- **count**: four studs in all, split 1+3, 2+2 or 3+1 between the zones.
- **pairing**: every stud has the part's colour.

Defects (each breaks one rule and keeps the others; studs never touch, never near the edge):

- ``count``: three or five studs, each zone still holding one to three (as good parts do);
- ``pairing``: a zone holding a single stud, that stud in another palette colour (the colour
  of other good parts), the three across the band in the part's colour;
- ``layout``: three studs in the zones and the fourth in the band.

Each part is built whole (height, albedo, gloss) and rendered under all six lights by the
renderer (``afrd.data.render.render_set``), so shading and shadows are consistent: nothing is
pasted. The defect's mask covers the studs the defect is about (every stud for ``count``: the
count is a property of all of them). ``part.meta["components"]`` lists (x, y, colour index)
per stud in the part's own frame (1 = half the image) and ``meta["plate"]`` its half sizes.
"""

from __future__ import annotations

import math

import numpy as np

from afrd.data.parts import CATEGORIES, Part, _grid, _plate, _plate_params, _smoothstep
from afrd.data.render import _pose_matrix, _rng, _warp, draw_look, place

KINDS: tuple[str, ...] = ("count", "pairing", "layout")
FAMILY_CATEGORIES: tuple[str, ...] = ("plate",)
# matte paints of about the same brightness: red, blue, green
PALETTE = np.array([[0.62, 0.17, 0.13], [0.15, 0.26, 0.62], [0.2, 0.5, 0.22]], np.float32)
HALF = (0.70, 0.48)  # the plate's half sizes (x, y), +-5 % per part
ZONE_X = (0.21, 0.50)  # |x| of a stud's centre in the zones
BAND_X = 0.03  # |x| of a stud's centre in the band (a layout defect)
STUD_Y = 0.24  # |y| of a stud's centre
STUD_R = 0.07
GAP = 0.17  # least distance between stud centres (0.03 of bare plate between two studs)
N_STUDS = 4


def _place(rng: np.random.Generator, counts: tuple[int, int], band: int = 0) -> list:
    """Stud centres: ``counts`` (left, right) in the zones, ``band`` in the band, spaced by
    ``GAP``; redrawn until they fit (always within a few tries at these sizes)."""
    while True:
        out: list = []
        want = [(-1, counts[0]), (1, counts[1]), (0, band)]
        for side, k in want:
            for _ in range(k):
                for _try in range(100):
                    if side == 0:
                        x = rng.uniform(-BAND_X, BAND_X)
                    else:
                        x = side * rng.uniform(*ZONE_X)
                    c = (float(x), float(rng.uniform(-STUD_Y, STUD_Y)))
                    if all(math.dist(c, o) >= GAP for o in out):
                        out.append(c)
                        break
        if len(out) == sum(counts) + band:
            return out


def plan(kind: str | None, rng: np.random.Generator) -> tuple[list, int, set]:
    """(stud centres with colour index, the part's colour, indices of the defect's studs)."""
    colour = int(rng.integers(len(PALETTE)))
    if kind is None:
        left = int(rng.integers(1, N_STUDS))
        studs = _place(rng, (left, N_STUDS - left))
        return [(x, y, colour) for x, y in studs], colour, set()
    if kind == "count":
        total = N_STUDS + int(rng.choice([-1, 1]))
        left = int(rng.integers(max(1, total - 3), min(3, total - 1) + 1))
        studs = _place(rng, (left, total - left))
        return [(x, y, colour) for x, y in studs], colour, set(range(len(studs)))
    if kind == "pairing":
        lone = int(rng.integers(2))  # the zone holding one stud: 0 left, 1 right
        counts = (1, N_STUDS - 1) if lone == 0 else (N_STUDS - 1, 1)
        studs = _place(rng, counts)
        other = (colour + 1 + int(rng.integers(len(PALETTE) - 1))) % len(PALETTE)
        odd = 0 if lone == 0 else len(studs) - 1  # _place lists left studs first
        cols = [other if i == odd else colour for i in range(len(studs))]
        return [(x, y, c) for (x, y), c in zip(studs, cols, strict=True)], colour, {odd}
    if kind == "layout":
        left = int(rng.integers(1, N_STUDS - 1))  # each zone keeps at least one stud
        studs = _place(rng, (left, N_STUDS - 1 - left), band=1)
        return [(x, y, colour) for x, y in studs], colour, {len(studs) - 1}
    raise ValueError(f"unknown logical family kind {kind!r}: expected one of {list(KINDS)}")


def _studs(canon, n: int, studs: list) -> tuple:
    """``canon`` (a plate without studs) with painted studs; returns it and each stud's
    footprint [n, n] in the canonical frame."""
    u, v = _grid(n)
    feet = []
    for x, y, c in studs:
        d = np.sqrt((u - x) ** 2 + (v - y) ** 2)
        stud = _smoothstep(STUD_R, STUD_R - 0.025, d)
        canon.height = canon.height + stud * (0.03 + 0.012 * np.clip(1 - (d / STUD_R) ** 2, 0, 1))
        paint = PALETTE[c] * (0.9 + 0.1 * canon.albedo.mean(-1, keepdims=True) / 0.56)
        canon.albedo = canon.albedo * (1 - stud[..., None]) + paint * stud[..., None]
        canon.ks = canon.ks + 0.1 * stud  # painted: a little glossier than the bare plate
        feet.append(stud)
    canon.albedo = np.clip(canon.albedo, 0, 1).astype(np.float32)
    return canon, feet


def sample_family_part(
    category: str, seed: int, kind: str | None = None, size: int = 256, pose: str = "free"
) -> Part:
    """Part ``seed`` of the family's ``category``: good (``kind`` None) or with defect ``kind``
    (one of ``KINDS``). Pose, camera gain and background are drawn as ``sample_part`` draws
    them; the studs from streams of their own."""
    if category not in FAMILY_CATEGORIES:
        raise ValueError(
            f"the logical family has no category {category!r}: expected one of "
            f"{list(FAMILY_CATEGORIES)}"
        )
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown logical family kind {kind!r}: expected one of {list(KINDS)}")
    n = int(size)
    cat_idx = CATEGORIES.index(category)
    rng = _rng(seed, cat_idx, 0)
    p = _plate_params(rng, n)
    look = draw_look(rng, n, pose)
    theta, scale, tx, ty = look[:4]
    p["a"] *= HALF[0] / 0.62
    p["b"] *= HALF[1] / 0.38
    # the stud layout draws from its own stream per kind, so a good part's twin is not implied
    studs, colour, marked = plan(kind, _rng(seed, cat_idx, 20 + (KINDS.index(kind) if kind else 9)))
    canon, feet = _studs(_plate(p, n, []), n, studs)
    m = _pose_matrix(n, theta, scale, tx, ty)
    cover, height, _, albedo, ks, shin = place(canon, m, n, look)
    mask = np.zeros((n, n), np.uint8)
    if marked:
        foot = np.max([feet[i] for i in sorted(marked)], axis=0)
        mask = (_warp(foot, m, n) > 0.5).astype(np.uint8)
    meta = {
        "pose": {"theta": theta, "scale": scale, "tx": float(tx), "ty": float(ty)},
        "family": "logical",
        "components": [[round(x, 4), round(y, 4), c] for x, y, c in studs],
        "colour": colour,
        "plate": [round(float(p["a"]), 4), round(float(p["b"]), 4)],
    }
    return Part(
        category=category,
        seed=int(seed),
        height=height.astype(np.float32),
        albedo=albedo,
        ks=np.clip(ks, 0, 1).astype(np.float32),
        shininess=np.maximum(shin, 1.0).astype(np.float32),
        translucency=0.0,
        mask=mask,
        label=int(kind is not None),
        defect=kind,
        defect_type="logical" if kind else None,
        meta=meta,
    )
