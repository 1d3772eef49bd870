"""Fitting a product's registration reference from good training sets (``afrd.data.register``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import cv2
import numpy as np

from afrd.data.register import METHODS, Registration
from afrd.data.silhouette import centroid, rotation_about, silhouette, to_canvas
from afrd.errors import ConfigError, RegistrationError

# Light names that show a part's outline best, in order of preference; otherwise the light with
# the clearest silhouette on the training sets is chosen (and recorded).
OUTLINE_LIGHTS = ("box", "diffuse", "image_5", "ring_all")
log = logging.getLogger("afrd.data.register")


def choose_light(lights: Sequence[str]) -> str | None:
    """The light that shows the outline best, by name (``OUTLINE_LIGHTS``); None if none."""
    for name in OUTLINE_LIGHTS:
        if name in lights:
            return name
    return None


def _clearest_light(sets: Sequence[np.ndarray], lights: Sequence[str], size: int) -> str:
    """The light whose silhouette stands out most (contrast over background noise) on ``sets``."""
    best, best_q = None, -1.0
    for i, name in enumerate(lights):
        qs = []
        for images in sets[:8]:
            canvas, _ = to_canvas(images[i], size)
            try:
                mask = silhouette(canvas)
            except RegistrationError:
                qs.append(0.0)
                continue
            inside, outside = canvas[mask > 0], canvas[mask == 0]
            qs.append(abs(inside.mean() - outside.mean()) / (outside.std() + inside.std() + 1e-6))
        q = float(np.median(qs))
        if q > best_q:
            best, best_q = name, q
    if best is None or best_q <= 0:
        raise RegistrationError(f"registration: no light shows the part's outline ({list(lights)})")
    return best


def _images(s) -> np.ndarray:
    return np.asarray(s.images if hasattr(s, "images") else s)


AUTO = "auto"  # content, shift or no registration, by how the training parts lie (see below)
TURN_GAIN = 0.95  # "content" must leave at most this fraction of "shift"'s spread to be chosen
# Parts that stray less than this are left as they are by "auto" (a fixtured part: +-4 deg, <1%)
STILL_DEG = 8.0
STILL_SHIFT = 0.02  # of the canvas


def fit_registration(
    sets: Sequence,
    lights: Sequence[str],
    *,
    light: str | None = None,
    size: int = 128,
    max_angle: float | None = None,
    method: str = AUTO,
    iterations: int = 2,
    max_sets: int = 32,
) -> Registration | None:
    """Build the reference from good sets (ImageSets or uint8 [N,H,W,3] arrays, ``lights`` order).

    The first part that registers starts the reference; every part is registered to it and the
    mean of the registered parts becomes the next reference, turned to the parts' mean rotation
    (when they share one), so the reference pose is the line's nominal pose. ``max_angle`` None
    searches 1.5x the training parts' spread of rotations plus 10 deg (any rotation when they
    spread past 80 deg): fewer wrong turns for a part whose outline is nearly symmetric.
    ``min_score`` is half the weakest training part's score: only what looks like no part of
    this product fails.

    ``method="auto"`` decides whether and how to register: the lamps stay put in the camera
    frame, so turning a part to the reference also turns the light falling on it, and any
    resampling blurs a little. It fits "content" and "shift"; "content" when it clearly leaves
    the training parts more alike over ALL lights (:func:`alignment_spread`) and they turn by
    more than ``STILL_DEG``; else "shift" when their centres stray more than ``STILL_SHIFT``;
    else None: the parts are fixtured and go in as they are. An elongated part on a belt gets
    turned; a part whose content has no fixed orientation (random holes, chips) only centred.
    """
    arrays = [_images(s) for s in list(sets)[:max_sets]]
    if not arrays:
        raise RegistrationError("registration: no training sets to fit a reference on")
    lights = list(lights)
    light = light or choose_light(lights) or _clearest_light(arrays, lights, size)
    if light not in lights:
        raise ConfigError(f"registration light {light!r} is not one of the lights {lights}")
    if method != AUTO:
        return _fit(arrays, lights, light, size, max_angle, method, iterations)
    content, shift = (
        _fit(arrays, lights, light, size, max_angle, m, iterations) for m in ("content", "shift")
    )
    spreads = [alignment_spread(reg, arrays, lights) for reg in (content, shift)]
    centre_px, turn_deg = _pose_range(
        content, [to_canvas(a[lights.index(light)], size)[0] for a in arrays]
    )
    # turn parts only when it clearly aligns them better (the spread does not see everything a
    # turn costs: the lamps' directions change relative to the part) and they do turn
    if spreads[0] < TURN_GAIN * spreads[1] and turn_deg > STILL_DEG:
        chosen: Registration | None = content
    elif centre_px > STILL_SHIFT * size:
        chosen = shift
    else:  # fixtured: resampling would add more variation than the pose has
        chosen = None
    log.info(
        "registration: content spread %.4f, shift spread %.4f, centres within %.1f px, turns "
        "within %.1f deg -> %s",
        *spreads,
        centre_px,
        turn_deg,
        chosen.method if chosen else "none",
    )
    return chosen


def _pose_range(reg: Registration, canvases: Sequence[np.ndarray]) -> tuple[float, float]:
    """How far the parts' centroids (px) and content rotations (deg) stray from their middle."""
    centres, turns = [], []
    for canvas in canvases:
        try:
            centres.append(centroid(silhouette(canvas)))
            m, _ = reg.estimate(canvas)
        except RegistrationError:
            continue
        turns.append(math.atan2(m[1, 0], m[0, 0]))
    if not centres:
        return 0.0, 0.0
    c = np.asarray(centres)
    centre_px = float(np.linalg.norm(c - np.median(c, axis=0), axis=1).max())
    mid = np.angle(np.mean(np.exp(1j * np.asarray(turns))))
    turn_deg = float(np.degrees(np.abs(np.angle(np.exp(1j * (np.asarray(turns) - mid))))).max())
    return centre_px, turn_deg


def alignment_spread(
    reg: Registration, arrays: Sequence[np.ndarray], lights: Sequence[str]
) -> float:
    """How much registered training parts still differ: per light, the per-pixel standard
    deviation across parts inside the reference's silhouette, over that light's own spread
    there (0: identical, about 1: unrelated), averaged over the lights."""
    lights = list(lights)
    li = lights.index(reg.light)
    region = cv2.dilate(silhouette(reg.reference.astype(np.float32)), np.ones((5, 5), np.uint8))
    region = region.astype(bool)
    stacks: list[list[np.ndarray]] = [[] for _ in lights]
    for a in arrays:
        canvases = [to_canvas(img, reg.size)[0] for img in a]
        try:
            m, _ = reg.estimate(canvases[li])
        except RegistrationError:
            continue
        for i, canvas in enumerate(canvases):
            w = cv2.warpAffine(canvas, m, (reg.size, reg.size), borderMode=cv2.BORDER_REPLICATE)
            stacks[i].append(w[region])
    if not stacks[0]:
        return float("inf")
    values = []
    for st in stacks:
        x = np.stack(st)
        values.append(float(x.std(axis=0).mean() / (x.std() + 1e-6)))
    return float(np.mean(values))


def _fit(
    arrays: list[np.ndarray],
    lights: list[str],
    light: str,
    size: int,
    max_angle: float | None,
    method: str,
    iterations: int,
) -> Registration:
    """One method's reference (see :func:`fit_registration`)."""
    if method not in METHODS:
        raise ConfigError(
            f"registration method {method!r}: expected {AUTO!r} or one of {list(METHODS)}"
        )
    canvases = [to_canvas(a[lights.index(light)], size)[0] for a in arrays]
    c = (size - 1) / 2.0
    ref = None
    for canvas in canvases:
        try:
            cx, cy = centroid(silhouette(canvas))
        except RegistrationError:
            continue
        m = rotation_about(cx, cy, 0.0, c, c)
        ref = cv2.warpAffine(canvas, m, (size, size), borderMode=cv2.BORDER_REPLICATE)
        break
    if ref is None:
        raise RegistrationError(f"registration: no part found in any training set (light {light})")
    search = 180.0 if max_angle is None else min(180.0, 2 * max_angle + 5)
    turn, angles = 0.0, []
    for _ in range(iterations):
        reg = Registration(light, size, _u8(ref), search, method, min_score=-1.0)
        warped, angles = [], []
        for canvas in canvases:
            try:
                m, _ = reg.estimate(canvas)
            except RegistrationError:
                continue
            warped.append(cv2.warpAffine(canvas, m, (size, size), borderMode=cv2.BORDER_REPLICATE))
            angles.append(math.atan2(m[1, 0], m[0, 0]))
        mean = np.mean(warped, axis=0).astype(np.float32)
        # turn the reference to the parts' mean pose when they have one (not at free pose)
        resultant = complex(np.mean(np.exp(1j * np.asarray(angles))))
        turn = math.degrees(np.angle(resultant)) if abs(resultant) > 0.7 else 0.0
        cx, cy = centroid(silhouette(mean))
        ref = cv2.warpAffine(
            mean, rotation_about(cx, cy, turn, c, c), (size, size), borderMode=cv2.BORDER_REPLICATE
        )
    if max_angle is None:  # the training parts' spread with margin; any rotation past 80
        spread = max((abs((math.degrees(a) - turn + 180) % 360 - 180) for a in angles), default=180)
        max_angle = 180.0 if spread > 80 else min(180.0, 1.5 * spread + 10)
    reg = Registration(light, size, _u8(ref), max_angle, method, min_score=-1.0)
    scores = []
    for canvas in canvases:
        try:
            scores.append(reg.estimate(canvas)[1])
        except RegistrationError:
            pass
    min_score = 0.5 * min(scores) if scores else 0.3
    return Registration(light, size, _u8(ref), max_angle, method, min_score=round(min_score, 4))


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
