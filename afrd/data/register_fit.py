"""Fitting a product's registration reference from good training sets (``afrd.data.register``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from afrd.data.register import Registration
from afrd.data.silhouette import centroid, rotation_about, silhouette, to_canvas
from afrd.errors import ConfigError, RegistrationError

# Light names that show a part's outline best, in order of preference; otherwise the light with
# the clearest silhouette on the training sets is chosen (and recorded).
OUTLINE_LIGHTS = ("box", "diffuse", "image_5", "ring_all")


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


def fit_registration(
    sets: Sequence,
    lights: Sequence[str],
    *,
    light: str | None = None,
    size: int = 128,
    max_angle: float | None = None,
    method: str = "content",
    iterations: int = 2,
    max_sets: int = 32,
) -> Registration:
    """Build the reference from good sets (ImageSets or uint8 [N,H,W,3] arrays, ``lights`` order).

    The first part that registers starts the reference; every part is registered to it and the
    mean of the registered parts becomes the next reference, turned to the parts' mean rotation
    (when they share one), so the reference pose is the line's nominal pose. ``max_angle`` None
    searches 1.5x the training parts' spread of rotations plus 10 deg (any rotation when they
    spread past 80 deg): fewer wrong turns for a part whose outline is nearly symmetric.
    ``min_score`` is half the weakest training part's score: only what looks like no part of
    this product fails.
    """
    arrays = [_images(s) for s in list(sets)[:max_sets]]
    if not arrays:
        raise RegistrationError("registration: no training sets to fit a reference on")
    lights = list(lights)
    light = light or choose_light(lights) or _clearest_light(arrays, lights, size)
    if light not in lights:
        raise ConfigError(f"registration light {light!r} is not one of the lights {lights}")
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
    if max_angle is None:  # the training parts' spread with margin; any rotation past 120
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
