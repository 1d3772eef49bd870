"""Finding a part in a grey frame and the image measures registration matches on
(``afrd.data.register``): the working canvas, the filled silhouette, its centroid and axis, the
part's content image and its polar resampling. numpy + OpenCV only (the daemon runs it)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from afrd.errors import RegistrationError

N_ANGLES = 360  # angle bins of the polar search (1 deg; parabolic interpolation refines it)
_MIN_AREA = 0.005  # a part covers at least this fraction of the canvas ...
_MAX_AREA = 0.9  # ... and leaves some background
_MIN_CONTRAST_DN = 8.0  # part vs background, 8-bit DN (after the noise test below)


# ----------------------------------------------------------------------------------------------
# Image helpers


def gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY).astype(np.float32)


def to_canvas(img: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey ``img`` scaled so its longer side is ``size`` and centred on a size x size canvas
    (borders replicated); returns (canvas, the 2x3 affine captured -> canvas pixels)."""
    g = gray(img)
    h, w = g.shape
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    if (nh, nw) != (h, w):
        g = cv2.resize(g, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    if (nh, nw) != (size, size):
        g = cv2.copyMakeBorder(
            g, top, size - nh - top, left, size - nw - left, cv2.BORDER_REPLICATE
        )
    sx, sy = nw / w, nh / h  # pixel centres: x' = (x + 0.5) * sx - 0.5 + left
    a = np.array([[sx, 0.0, 0.5 * sx - 0.5 + left], [0.0, sy, 0.5 * sy - 0.5 + top]])
    return g, a


def affine3(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])


def rotation_about(cx: float, cy: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    """2x3 affine: rotate by ``angle_deg`` (image coordinates, counter-clockwise on screen)
    about (cx, cy), then move (cx, cy) to (tx, ty)."""
    m = cv2.getRotationMatrix2D((cx, cy), angle_deg, 1.0)
    m[:, 2] += (tx - cx, ty - cy)
    return m


def silhouette(gray: np.ndarray) -> np.ndarray:
    """The part's filled silhouette (uint8 0/1) in a grey frame; RegistrationError when there
    is no part (blank frame, too little contrast) or the 'part' is the whole frame."""
    g = cv2.GaussianBlur(gray, (0, 0), 1.0)
    b = max(2, g.shape[0] // 64)
    border = np.concatenate([g[:b].ravel(), g[-b:].ravel(), g[:, :b].ravel(), g[:, -b:].ravel()])
    bg = float(np.median(border))
    noise = 1.4826 * float(np.median(np.abs(border - bg))) + 0.5
    diff = np.abs(g - bg)
    d8 = np.clip(diff, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = max(float(otsu), 4.0 * noise, _MIN_CONTRAST_DN / 2)
    fg = (diff > thr).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, k)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    area = g.shape[0] * g.shape[1]
    if count < 2:
        raise RegistrationError("registration: no part found (the frame is blank)")
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    part = (labels == best).astype(np.uint8)
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(part)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    frac = filled.sum() / area
    contrast = float(diff[part > 0].mean())
    if frac < _MIN_AREA or contrast < max(_MIN_CONTRAST_DN, 5.0 * noise):
        raise RegistrationError(
            f"registration: no part found (largest blob {100 * frac:.2f}% of the frame, "
            f"contrast {contrast:.1f} DN against background noise {noise:.1f} DN)"
        )
    if frac > _MAX_AREA:
        raise RegistrationError(
            f"registration: the 'part' fills {100 * frac:.0f}% of the frame: no background to "
            "find its outline against"
        )
    return filled


def centroid(mask: np.ndarray) -> tuple[float, float]:
    m = cv2.moments(mask, binaryImage=True)
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def principal_angle(mask: np.ndarray) -> float:
    """Angle (deg, image coordinates) of the silhouette's long axis, in (-90, 90]."""
    m = cv2.moments(mask, binaryImage=True)
    return math.degrees(0.5 * math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))


def content_image(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What is matched: the part's grey values inside its (slightly grown) silhouette, zero-mean
    there, zero outside, so the background's texture and the part's brightness do not count."""
    grown = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2).astype(bool)
    c = np.zeros_like(gray)
    vals = gray[grown]
    c[grown] = (vals - vals.mean()) / (vals.std() + 1e-6)
    return c


def polar(content: np.ndarray, cx: float, cy: float, radius: float) -> np.ndarray:
    """[angles, radii] polar resampling about (cx, cy), weighted by sqrt(r) (area element)."""
    n_r = max(16, int(radius))
    p = cv2.warpPolar(
        content, (n_r, N_ANGLES), (cx, cy), radius, cv2.WARP_POLAR_LINEAR + cv2.INTER_LINEAR
    )
    return p * np.sqrt((np.arange(n_r, dtype=np.float32) + 0.5) / n_r)[None, :]


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))
