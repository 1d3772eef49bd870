"""Registration of a multi-light image set to the product's reference pose (numpy + OpenCV).

All lights of a set share one pose, so the transform is estimated on ONE light (the one that
shows the outline and the part's content best, normally the diffuse light box) and applied to
every image. Three steps, on a working canvas of ``size`` px:

1. Silhouette: the part is what differs from the frame border's background (Otsu on the
   difference), largest component, holes filled. No part, or too little contrast, is a
   :class:`~afrd.errors.RegistrationError`.
2. Coarse pose: the silhouette's centroid goes to the canvas centre; the rotation comes from the
   part's CONTENT, not its outline: a polar image around the centroid is correlated with the
   reference's at every angle within ``max_angle`` at once (an FFT along the angle axis). A round
   button's holes, not its circle, decide its rotation; an elongated part's outline counts too.
3. Fine pose: ECC (Euclidean: angle and shift) against the reference refines it to a fraction
   of a pixel; the normalised correlation after it is the match score, and a score under
   ``min_score`` (fitted on the training parts) is a :class:`RegistrationError`.

``method="shift"`` stops after the centroid (+ ECC on the shift): the part is not turned, so
the lamps keep their directions relative to it, and its match score compares the part's radial
profile (the polar image's mean over angles), which a turn does not change
(``register_fit``'s "auto" chooses between the two per product). ``method="moments"`` turns by the silhouette's principal axis (cheap; wrong
for round or square outlines, kept for comparison). ``afrd.data.register_fit.fit_registration``
builds the reference from good training sets; :meth:`Registration.to_dict` /
:meth:`Registration.from_dict` carry it through checkpoints and bundles; :func:`warp_back` maps
an anomaly map back to the captured frame.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from afrd.data.imageset import ImageSet
from afrd.data.silhouette import (
    N_ANGLES,
    affine3,
    centroid,
    content_image,
    ncc,
    polar,
    principal_angle,
    rotation_about,
    silhouette,
    to_canvas,
)
from afrd.errors import ConfigError, RegistrationError

# content: centre + rotation from the part's content; shift: centre only (the lights stay where
# they were relative to the part); moments: centre + the silhouette's long axis
METHODS = ("content", "shift", "moments")


@dataclass(frozen=True)
class Registered:
    """A registered set: ``images`` [N,H,W,3] uint8 in the reference pose, ``matrix`` the 2x3
    affine taking captured pixel coordinates to registered ones (at the images' resolution),
    ``angle_deg`` the part's rotation from the reference (counter-clockwise on screen)."""

    images: np.ndarray
    matrix: np.ndarray
    angle_deg: float
    shift_px: tuple[float, float]
    score: float


# ----------------------------------------------------------------------------------------------
# The registration


@dataclass(frozen=True)
class Registration:
    """Parameters and reference of one product's registration (see the module docstring).

    ``reference`` is the reference part's grey image on the ``size`` x ``size`` canvas (uint8),
    in the reference pose (centred); ``max_angle`` bounds the rotation search (180: any).
    """

    light: str
    size: int
    reference: np.ndarray
    max_angle: float = 180.0
    method: str = "content"
    min_score: float = 0.3

    def __post_init__(self) -> None:
        # a RegistrationError here (no part in the reference) means a corrupt record
        if self.method not in METHODS:
            raise ConfigError(f"registration method {self.method!r}: expected one of {METHODS}")
        if not 0 < self.max_angle <= 180:
            raise ConfigError(f"registration max_angle {self.max_angle}: expected 0 < x <= 180")
        if self.reference.shape != (self.size, self.size) or self.reference.dtype != np.uint8:
            raise ConfigError(
                f"registration reference: expected uint8 [{self.size}, {self.size}], got "
                f"{self.reference.dtype} {list(self.reference.shape)}"
            )
        ref = self.reference.astype(np.float32)
        mask = silhouette(ref)
        object.__setattr__(self, "_ref_mask", mask)
        object.__setattr__(self, "_ref_content", content_image(ref, mask))
        c = (self.size - 1) / 2.0
        object.__setattr__(self, "_radius", self._polar_radius())
        object.__setattr__(self, "_ref_polar", polar(self._ref_content, c, c, self._radius))
        object.__setattr__(self, "_ref_profile", self._profile(ref))

    def _polar_radius(self) -> float:
        ys, xs = np.nonzero(self._ref_mask)
        c = (self.size - 1) / 2.0
        return float(min(np.sqrt((xs - c) ** 2 + (ys - c) ** 2).max() + 3, self.size / 2))

    # ---- estimating the pose ----------------------------------------------------------------
    def estimate(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        """(2x3 affine canvas -> reference canvas, match score) for a grey canvas image."""
        mask = silhouette(gray)
        cx, cy = centroid(mask)
        c = (self.size - 1) / 2.0
        if self.method == "moments":
            d = principal_angle(mask) - principal_angle(self._ref_mask)
            d = (d + 90) % 180 - 90  # the axis has no direction: the smaller turn
            m = rotation_about(cx, cy, d, c, c)
            warped = cv2.warpAffine(gray, m, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
            return m, self._score(warped)
        if self.method == "shift":
            m, _ = self._refine(gray, rotation_about(cx, cy, 0.0, c, c), cv2.MOTION_TRANSLATION)
            warped = cv2.warpAffine(gray, m, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
            return m, ncc(self._profile(warped), self._ref_profile)
        angle = self._search_angle(content_image(gray, mask), cx, cy)
        m = rotation_about(cx, cy, angle, c, c)
        return self._refine(gray, m, cv2.MOTION_EUCLIDEAN)

    def _search_angle(self, content: np.ndarray, cx: float, cy: float) -> float:
        """Rotation (deg) that best aligns ``content`` about (cx, cy) with the reference."""
        p = polar(content, cx, cy, self._radius)
        # circular cross-correlation along the angle axis, summed over radii
        f = np.fft.rfft(p, axis=0) * np.conj(np.fft.rfft(self._ref_polar, axis=0))
        corr = np.fft.irfft(f.sum(axis=1), n=N_ANGLES)
        shifts = np.arange(N_ANGLES)
        deg = (shifts * 360.0 / N_ANGLES + 180) % 360 - 180
        allowed = np.abs(deg) <= self.max_angle + 1e-6
        # of equally good turns (a symmetric part) take the smallest: turning a part also turns
        # the light on it, so a needless half turn swaps what the raking lamps show
        tie_break = 0.1 * (corr.max() - corr.min()) * np.abs(deg) / 180.0
        k = int(np.argmax(np.where(allowed, corr - tie_break, -np.inf)))
        y0, y1, y2 = corr[(k - 1) % N_ANGLES], corr[k], corr[(k + 1) % N_ANGLES]
        den = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
        # polar row k of the image matches row 0 of the reference: the part sits k bins further
        # round (counter-clockwise in image coordinates), so turn it back by as much
        return float(deg[k] + frac * 360.0 / N_ANGLES)

    def _profile(self, canvas: np.ndarray) -> np.ndarray:
        """The mean over angles of the polar image about the canvas centre: what a centred part
        shows at every rotation. ``shift`` does not turn parts, so its match score compares
        this, not the image: a round part lying at any turn is still this product (a content
        score there failed good parts at free pose), a different product is not."""
        c = (self.size - 1) / 2.0
        return polar(canvas.astype(np.float32), c, c, self._radius).mean(axis=0)

    def _score(self, warped: np.ndarray) -> float:
        grown = cv2.dilate(self._ref_mask, np.ones((5, 5), np.uint8)).astype(bool)
        return ncc(warped[grown], self.reference.astype(np.float32)[grown])

    def _refine(self, gray: np.ndarray, m: np.ndarray, motion: int) -> tuple[np.ndarray, float]:
        """ECC (``motion``: Euclidean or translation) from ``m``: the refined affine, its score."""
        ref = cv2.GaussianBlur(self.reference.astype(np.float32), (0, 0), 1.0)
        img = cv2.GaussianBlur(gray, (0, 0), 1.0)
        shape = gray.shape[::-1]
        coarse = cv2.warpAffine(img, m, shape, borderMode=cv2.BORDER_REPLICATE)
        warp = np.eye(2, 3, dtype=np.float32)
        grown = cv2.dilate(self._ref_mask, np.ones((5, 5), np.uint8), iterations=2)
        try:
            _, warp = cv2.findTransformECC(
                ref,
                coarse,
                warp,
                motion,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5),
                grown,
                1,
            )
            # coarse(W x) ~ ref(x): registered(x) = img(m^-1 W x), i.e. the new forward affine
            # (captured -> reference) is (m^-1 W)^-1 = W^-1 m
            fine = (np.linalg.inv(affine3(warp)) @ affine3(m))[:2]
        except cv2.error:  # ECC did not converge: keep the coarse pose, the score decides
            fine = m
        warped = cv2.warpAffine(gray, fine, shape, borderMode=cv2.BORDER_REPLICATE)
        score = self._score(warped)
        coarse_score = self._score(cv2.warpAffine(gray, m, shape, borderMode=cv2.BORDER_REPLICATE))
        return (fine, score) if score >= coarse_score else (m, coarse_score)

    # ---- applying it ------------------------------------------------------------------------
    def register(self, images: np.ndarray, lights: Sequence[str]) -> Registered:
        """Register one set (uint8 [N,H,W,3], lights in that order) to the reference pose."""
        images = np.asarray(images)
        if self.light not in lights:
            raise RegistrationError(
                f"registration uses light {self.light!r}, the set has lights {list(lights)}"
            )
        img = images[list(lights).index(self.light)]
        canvas, a = to_canvas(img, self.size)
        m, score = self.estimate(canvas)
        if not score >= self.min_score:
            raise RegistrationError(
                f"registration: the part matches the reference too weakly (score {score:.2f} < "
                f"{self.min_score:.2f}): wrong product, or a part the reference never saw"
            )
        full = (np.linalg.inv(affine3(a)) @ affine3(m) @ affine3(a))[:2]
        if self.method == "shift":
            # whole pixels: resampling at a fraction of a pixel blurs by a random amount, a
            # nuisance that costs more than the half pixel of alignment it buys
            full = np.array([[1.0, 0.0, round(full[0, 2])], [0.0, 1.0, round(full[1, 2])]])
        h, w = images.shape[1:3]
        out = np.stack(
            [
                cv2.warpAffine(
                    im, full, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
                )
                for im in images
            ]
        )
        angle = math.degrees(math.atan2(full[1, 0], full[0, 0]))
        return Registered(out, full, angle, (float(full[0, 2]), float(full[1, 2])), score)

    # ---- records ------------------------------------------------------------------------------
    def params(self) -> dict:
        """The parameters without the reference image (bundle.json names the file)."""
        return {
            "method": self.method,
            "light": self.light,
            "size": int(self.size),
            "max_angle": float(self.max_angle),
            "min_score": float(self.min_score),
        }

    def to_dict(self) -> dict:
        """JSON-able, reference inline as a base64 PNG (checkpoints)."""
        return {**self.params(), "reference_png": base64.b64encode(png_bytes(self)).decode()}

    @classmethod
    def from_dict(cls, d: dict, reference: np.ndarray | None = None) -> Registration:
        """From :meth:`to_dict` (or :meth:`params` plus ``reference``)."""
        try:
            if reference is None:
                reference = decode_png(base64.b64decode(d["reference_png"]))
            return cls(
                light=str(d["light"]),
                size=int(d["size"]),
                reference=reference,
                max_angle=float(d.get("max_angle", 180.0)),
                method=str(d.get("method", "content")),
                min_score=float(d.get("min_score", 0.3)),
            )
        except KeyError as e:
            raise ConfigError(f"registration record misses key {e.args[0]!r}") from None


def png_bytes(reg: Registration) -> bytes:
    ok, buf = cv2.imencode(".png", reg.reference)
    if not ok:  # pragma: no cover - uint8 greyscale always encodes
        raise ConfigError("registration reference: PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ConfigError("registration reference: not a readable PNG")
    return img


def warp_back(amap: np.ndarray, matrix: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """An anomaly map [h,w] of a registered set back into the captured frame's pose.

    ``matrix`` is :attr:`Registered.matrix` (at the captured resolution ``frame_hw``); the map
    keeps its own resolution. Outside the registered view the map is 0.
    """
    h, w = amap.shape
    fh, fw = frame_hw
    s = np.diag([w / fw, h / fh, 1.0])
    m = (s @ affine3(matrix) @ np.linalg.inv(s))[:2]
    return cv2.warpAffine(
        np.asarray(amap, np.float32),
        m,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


# ----------------------------------------------------------------------------------------------
# Applying it to image sets and batches (train, eval, export parity and every engine use these)


def register_set(reg: Registration, s: ImageSet) -> ImageSet:
    """``s`` in the reference pose: images and ground-truth mask warped alike; the transform
    in ``meta["registration"]`` (matrix captured -> registered, angle, score)."""
    try:
        r = reg.register(s.images, s.lights)
    except RegistrationError as exc:  # say which set: a dataset holds hundreds
        raise RegistrationError(f"image set {s.part_id or '?'}: {exc}") from None
    mask = s.mask
    if mask is not None:
        h, w = r.images.shape[1:3]
        m = np.asarray(mask, np.uint8)
        m = m[..., 0] if m.ndim == 3 else m
        mask = cv2.warpAffine(m, r.matrix, (w, h), flags=cv2.INTER_NEAREST)
    meta = {
        **s.meta,
        "registration": {
            "matrix": r.matrix.tolist(),
            "angle_deg": r.angle_deg,
            "score": r.score,
        },
    }
    return replace(s, images=r.images, mask=mask, meta=meta)


class RegisteredSets:
    """A dataset view (``len``, ``[i]``, ``labels``) whose sets come out registered."""

    def __init__(self, sets, reg: Registration) -> None:
        self.sets, self.reg = sets, reg
        labels = getattr(sets, "labels", None)
        if labels is not None:
            self.labels = labels

    def __len__(self) -> int:
        return len(self.sets)

    def __getitem__(self, i: int) -> ImageSet:
        return register_set(self.reg, self.sets[i])


def register_batch(
    reg: Registration, images: np.ndarray, lights: Sequence[str]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """uint8 [B,N,H,W,3] -> (registered batch, one 2x3 matrix per set)."""
    out, matrices = np.empty_like(images), []
    for i, one in enumerate(images):
        r = reg.register(one, lights)
        out[i] = r.images
        matrices.append(r.matrix)
    return out, matrices
