"""Pixel conversion and producer discovery of the GenICam driver, on synthetic buffers of known
content (no producer needed)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from afrd.acquire.gentl import producer_files
from afrd.acquire.pixel_format import to_rgb8
from afrd.errors import DeviceError

# PFNC names the 2x2 tile from its top-left pixel, row by row.
TILES = {"RG": "RGGB", "GR": "GRBG", "GB": "GBRG", "BG": "BGGR"}
COLOUR = (200, 120, 40)  # distinct R, G, B so any channel or tile mix-up shows


def mosaic(pattern: str, rgb: tuple[int, int, int], h: int = 16, w: int = 20) -> np.ndarray:
    """A Bayer mosaic of ``pattern`` (PFNC naming) showing a uniform colour ``rgb``."""
    value = dict(zip("RGB", rgb, strict=True))
    tile = TILES[pattern]
    out = np.zeros((h, w), np.uint16)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[dy::2, dx::2] = value[tile[k]]
    return out


@pytest.mark.parametrize("pattern", sorted(TILES))
def test_bayer8_uniform_colour_demosaics_to_that_colour(pattern: str) -> None:
    raw = mosaic(pattern, COLOUR).astype(np.uint8)
    rgb = to_rgb8(raw, f"Bayer{pattern}8")
    assert rgb.shape == (16, 20, 3) and rgb.dtype == np.uint8
    inner = rgb[2:-2, 2:-2].reshape(-1, 3)
    assert (inner == COLOUR).all(), f"Bayer{pattern}8 gave {np.unique(inner, axis=0)}"


@pytest.mark.parametrize("pattern", sorted(TILES))
@pytest.mark.parametrize("bits", [10, 12, 16])
def test_bayer_high_bit_depth_scales_to_8bit(pattern: str, bits: int) -> None:
    raw = mosaic(pattern, COLOUR) << (bits - 8)
    rgb = to_rgb8(raw, f"Bayer{pattern}{bits}")
    assert (rgb[2:-2, 2:-2].reshape(-1, 3) == COLOUR).all()


def test_bayer_single_red_site_lands_in_red_channel() -> None:
    # Only the R sites lit: for BayerRG that is (0,0) of every tile, for BayerBG (1,1).
    for pattern, (y, x) in (("RG", (0, 0)), ("BG", (1, 1)), ("GR", (0, 1)), ("GB", (1, 0))):
        raw = np.zeros((8, 8), np.uint8)
        raw[y::2, x::2] = 255
        rgb = to_rgb8(raw, f"Bayer{pattern}8")
        assert rgb[2:-2, 2:-2, 0].min() == 255, pattern
        assert rgb[2:-2, 2:-2, 1:].max() == 0, pattern


@pytest.mark.parametrize(
    ("fmt", "full"), [("Mono8", 255), ("Mono10", 1023), ("Mono12", 4095), ("Mono16", 65535)]
)
def test_mono_scales_full_scale_to_255(fmt: str, full: int) -> None:
    dtype = np.uint8 if full == 255 else np.uint16
    raw = np.array([[0, full // 2 + 1, full]], dtype)
    rgb = to_rgb8(raw, fmt)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 128, 255]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_mono_with_trailing_channel_axis() -> None:
    raw = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    assert (to_rgb8(raw, "Mono8")[..., 2] == raw[..., 0]).all()


@pytest.mark.parametrize("fmt", ["RGB8", "BGR8", "RGBa8", "BGRa8"])
def test_colour_orders_become_rgb(fmt: str) -> None:
    order = fmt[:3]
    planes = {"R": 10, "G": 20, "B": 30, "a": 99}
    chans = [planes[c] for c in order] + ([planes["a"]] if fmt[3] == "a" else [])
    raw = np.broadcast_to(np.array(chans, np.uint8), (4, 5, len(chans))).copy()
    rgb = to_rgb8(raw, fmt)
    assert rgb.shape == (4, 5, 3) and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [10, 20, 30]


def test_rgb12_unpacked_scales() -> None:
    raw = np.full((2, 2, 3), 4095, np.uint16)
    raw[..., 2] = 0
    assert to_rgb8(raw, "BGR12")[0, 0].tolist() == [0, 255, 255]


@pytest.mark.parametrize(
    ("fmt", "shape"),
    [
        ("YUV422Packed", (2, 2)),
        ("Mono8Signed", (2, 2)),
        ("RGB8Planar", (2, 2, 3)),
        ("RGB8", (2, 2)),
        ("BayerRG8", (2, 2, 3)),
    ],
)
def test_unsupported_or_misshaped_raises_device_error(fmt: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(DeviceError, match=fmt[:4]):
        to_rgb8(np.zeros(shape, np.uint8), fmt)


def test_producer_files_from_env_dirs_and_files(tmp_path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.cti").write_bytes(b"")
    (tmp_path / "a" / "readme.txt").write_text("x")
    two = tmp_path / "two.cti"
    two.write_bytes(b"")
    monkeypatch.setenv(
        "GENICAM_GENTL64_PATH", os.pathsep.join([str(tmp_path / "a"), "", str(two), "/nonexistent"])
    )
    assert [p.name for p in producer_files(None)] == ["one.cti", "two.cti"]
    assert [p.name for p in producer_files([str(two)])] == ["two.cti"]


def test_producer_files_none_found_names_the_source(monkeypatch) -> None:
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    with pytest.raises(DeviceError, match="GENICAM_GENTL64_PATH"):
        producer_files(None)
    with pytest.raises(DeviceError, match="/nowhere/x.cti"):
        producer_files("/nowhere/x.cti")
