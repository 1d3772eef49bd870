"""Pixel-format conversion: a GenICam (PFNC) frame as the buffer holds it -> HxWx3 uint8 RGB."""

from __future__ import annotations

import cv2
import numpy as np

from afrd.errors import DeviceError

# GenICam (PFNC) names the 2x2 tile from its top-left pixel: BayerRG = R G / G B.
# OpenCV names it from the second row/column (pixels (1,1),(1,2)), so the names are shifted:
# PFNC RG is OpenCV BG, GR is GB, GB is GR, BG is RG. tests/test_genicam_convert.py checks
# every pattern against a mosaic of a known colour.
BAYER_TO_CV2 = {
    "RG": cv2.COLOR_BayerBG2RGB,
    "GR": cv2.COLOR_BayerGB2RGB,
    "GB": cv2.COLOR_BayerGR2RGB,
    "BG": cv2.COLOR_BayerRG2RGB,
}


def _bits(pixel_format: str, default: int = 8) -> int:
    """Significant bits per sample from a PFNC name: Mono12 -> 12, BayerRG10p -> 10."""
    digits = "".join(ch if ch.isdigit() else " " for ch in pixel_format).split()
    return int(digits[0]) if digits else default


def _to_8bit(raw: np.ndarray, bits: int) -> np.ndarray:
    if raw.dtype == np.uint8 and bits <= 8:
        return raw
    if bits <= 8:
        return np.clip(raw, 0, 255).astype(np.uint8)
    return (raw.astype(np.uint16) >> (bits - 8)).astype(np.uint8)


def to_rgb8(raw: np.ndarray, pixel_format: str) -> np.ndarray:
    """Convert one frame (HxW or HxWxC, as the buffer holds it) to contiguous HxWx3 uint8 RGB.

    Supports Mono8/10/12/14/16, Bayer{RG,GR,GB,BG}{8,10,12,14,16} (bilinear demosaic with OpenCV),
    RGB8/BGR8/RGBa8/BGRa8 and the unpacked RGB/BGR 10/12/16. Samples wider than 8 bit are scaled
    by a right shift (full scale stays full scale). Raises DeviceError for anything else.
    """
    fmt = pixel_format
    bits = _bits(fmt)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if fmt.startswith("Mono") and "Signed" not in fmt:
        if raw.ndim != 2:
            raise DeviceError(f"{fmt} frame has shape {raw.shape}, expected HxW")
        mono = _to_8bit(raw, bits)
        return cv2.cvtColor(np.ascontiguousarray(mono), cv2.COLOR_GRAY2RGB)
    if fmt.startswith("Bayer") and fmt[5:7] in BAYER_TO_CV2:
        if raw.ndim != 2:
            raise DeviceError(f"{fmt} frame has shape {raw.shape}, expected HxW")
        mosaic = np.ascontiguousarray(_to_8bit(raw, bits))
        return cv2.cvtColor(mosaic, BAYER_TO_CV2[fmt[5:7]])
    for prefix, order in (("RGBa", "rgb"), ("BGRa", "bgr"), ("RGB", "rgb"), ("BGR", "bgr")):
        if (
            fmt.startswith(prefix)
            and "Planar" not in fmt
            and fmt[len(prefix) : len(prefix) + 1].isdigit()
        ):
            want = 4 if prefix.endswith("a") else 3
            if raw.ndim != 3 or raw.shape[2] != want:
                raise DeviceError(f"{fmt} frame has shape {raw.shape}, expected HxWx{want}")
            rgb = raw[:, :, :3] if order == "rgb" else raw[:, :, 2::-1]
            return np.ascontiguousarray(_to_8bit(rgb, bits))
    raise DeviceError(
        f"pixel format {fmt!r} is not supported; use Mono8/10/12/16, Bayer**8/10/12/16, "
        "RGB8, BGR8, RGBa8 or BGRa8"
    )
