"""Logical anomalies: every component is fine on its own, the part is wrong as a whole.

The renderer's categories are built from components (``afrd.data.parts``: a button's four
holes, a plate's four studs, a cookie's six chips, a gummy bear's ears, arms and legs). A logical
defect changes which components there are, where, or what colour, never their surface:

- ``missing``, ``misplaced``: one component left out or moved (built in
  ``afrd.data.render.sample_part``; the two the default ``any``/``logical`` draw uses);
- ``extra``: one more component, at a free place where the part's others could be;
- ``count``: two components left out (the count is off by two);
- ``swapped``: two components of different kinds exchange places (a gummy bear's ear and leg;
  a cookie's largest and smallest chip); only categories whose components differ have it;
- ``wrong_colour``: one component in a colour no good part has (a button hole's rim, a stud,
  a chip, a limb).

The names beyond ``missing``/``misplaced`` are never drawn by ``any`` or ``logical``, so data
rendered before they existed stays the same part for part; ``afrd synth --logical`` renders a
test split drawing from all of them (``LOGICAL_FOR``). The defect's mask is every pixel whose
height, coverage or colour differs from the part's defect-free twin.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from afrd.data.parts import LOGICAL_EXTRA

LOGICAL_ALL: tuple[str, ...] = ("missing", "misplaced", *LOGICAL_EXTRA)
# the logical defects each category can show (swapped needs components of different kinds)
LOGICAL_FOR: dict[str, tuple[str, ...]] = {
    "button": ("missing", "misplaced", "extra", "count", "wrong_colour"),
    "plate": ("missing", "misplaced", "extra", "count", "wrong_colour"),
    "cookie": ("missing", "misplaced", "extra", "count", "swapped", "wrong_colour"),
    "gummy": ("missing", "misplaced", "extra", "count", "swapped", "wrong_colour"),
}
_GONE = (9.0, 9.0)  # a component moved out of view: how the builders leave one out
# contrasting colours for a wrong-coloured component (red, green, blue, yellow)
_WRONG = np.array(
    [[0.85, 0.12, 0.1], [0.12, 0.65, 0.15], [0.12, 0.25, 0.85], [0.9, 0.8, 0.1]], np.float32
)


def _removed(category: str) -> tuple:
    return (None, None) if category == "gummy" else _GONE


def _free_place(category: str, p: dict, comps: list, rng: np.random.Generator) -> tuple:
    """A place for one more component: on the part, clear of the others."""
    if category == "button":  # holes sit on a circle of radius 0.2: midway between two
        ang = math.atan2(comps[0][1], comps[0][0]) + math.pi / 4 + (math.pi / 2) * rng.integers(4)
        return (0.2 * math.cos(ang), 0.2 * math.sin(ang))
    if category == "plate":  # studs at the four corners: one in the middle of a long side
        return (0.0, float(rng.choice([-0.18, 0.18])))
    if category == "gummy":  # a third ear, on top of the head
        return (float(rng.uniform(-0.04, 0.04)), -0.58)
    for _ in range(200):  # cookie: like the chips are drawn, clear of them
        ang, rad = rng.uniform(0, 2 * np.pi), 0.38 * math.sqrt(rng.uniform(0.05, 1))
        c = (rad * math.cos(ang), rad * math.sin(ang))
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > 0.16**2 for o in comps):
            return c
    return (0.0, 0.0)


def plan(
    name: str, category: str, p: dict, rng: np.random.Generator
) -> tuple[dict, list, int | None]:
    """(parameters, components, component to recolour or None) of a part with logical defect
    ``name`` (one of ``LOGICAL_EXTRA``); ValueError if the category cannot show it."""
    if name not in LOGICAL_FOR.get(category, ()):
        raise ValueError(
            f"logical defect {name!r} does not apply to {category!r}: expected one of "
            f"{list(LOGICAL_FOR.get(category, ()))}"
        )
    p, comps = dict(p), list(p["comps"])
    recolour = None
    if name == "extra":
        comps.append(_free_place(category, p, comps, rng))
        if category == "cookie":
            p["chip_r"] = np.append(p["chip_r"], rng.uniform(0.045, 0.06))
    elif name == "count":
        for k in rng.choice(len(comps), 2, replace=False):
            comps[int(k)] = _removed(category)
    elif name == "swapped":
        if category == "gummy":  # an ear (0, 1) and a leg (4, 5) on the same side or not
            a, b = int(rng.integers(2)), 4 + int(rng.integers(2))
        else:  # cookie: the largest and the smallest chip
            a, b = int(np.argmax(p["chip_r"])), int(np.argmin(p["chip_r"]))
        comps[a], comps[b] = comps[b], comps[a]
    elif name == "wrong_colour":
        recolour = int(rng.integers(len(comps)))
    return p, comps, recolour


def recolour(canon, build, p: dict, n: int, comps: list, k: int, category: str):
    """``canon`` with component ``k`` (and, for a hole, its rim) in a contrasting colour."""
    others = list(comps)
    others[k] = _removed(category)
    without = build(p, n, others)
    foot = (np.abs(canon.height - without.height) > 1e-4) | (
        np.abs(canon.cover - without.cover) > 0.05
    )
    foot = foot.astype(np.uint8)
    if category == "button":  # a hole has no colour of its own: its rim (a grommet) does
        rim = cv2.dilate(foot, np.ones((3, 3), np.uint8), iterations=max(1, n // 40))
        foot = rim & (foot == 0)
    soft = cv2.GaussianBlur(foot.astype(np.float32), (0, 0), max(0.6, n / 256.0))
    soft = (soft * canon.cover)[..., None]
    comp_col = canon.albedo[foot > 0].mean(0) if foot.any() else canon.albedo.mean((0, 1))
    chroma = comp_col / max(float(comp_col.sum()), 1e-6)
    target = _WRONG[int(np.argmax(np.abs(_WRONG / _WRONG.sum(1, keepdims=True) - chroma).sum(1)))]
    lum = canon.albedo.mean(-1, keepdims=True)
    new = np.clip(target * (0.55 + 0.6 * lum), 0, 1)
    canon.albedo = (canon.albedo * (1 - soft) + new * soft).astype(np.float32)
    return canon


def defect_family(s) -> str | None:
    """``"logical"`` or ``"structural"`` for a defective ImageSet, None for a good or unlabelled
    one. Read from ``meta["defect_type"]`` (rendered in memory) or, for a dataset on disk, from
    a ``logical_mask`` file beside the set (``afrd synth`` writes ``<id>_<type>_mask.png``) or
    ``logical: 1`` in its metadata.yaml; every other defect (Eyecandies' bumps, dents, colours,
    normals) is structural."""
    if getattr(s, "label", None) != 1:
        return None
    meta = getattr(s, "meta", None) or {}
    kind = meta.get("defect_type")
    files = meta.get("files") or {}
    if kind is None and "logical_mask" in files:
        kind = "logical"
    if kind is None and "metadata" in files:
        from afrd.data.eyecandies import parse_metadata  # the dataset reader: only here

        if parse_metadata(Path(files["metadata"])).get("logical") == 1:
            kind = "logical"
    return "logical" if kind == "logical" else "structural"
