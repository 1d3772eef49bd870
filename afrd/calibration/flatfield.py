"""Flat-field and dark correction per lighting.

For each lighting L, from frames of a uniform white (grey) target ``F_L`` and dark frames
``D_L`` (same camera settings, lights off): ``gain_L = mean(F_L - D_L) / (F_L - D_L)`` per
pixel and colour channel, and a frame is corrected as ``(raw - D_L) * gain_L``. This removes
the illumination pattern of each lighting (a ring lamp's fall-off, lens vignetting) and the
sensor offset while keeping the lighting's mean level.

Stored as one ``.npz`` (``dark/<light>``, ``gain/<light>``, ``meta`` JSON) plus a JSON report;
the cell config references the ``.npz`` by path.

``afrd calibrate flatfield --sim --out DIR`` calibrates the simulated cell;
``--config cell.toml`` the cell a config describes; ``--images DIR`` reads frames from a folder
(``<light>*.png`` white-target frames, ``dark_<light>*.png`` or ``dark*.png`` dark frames).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from afrd.acquire.correction import FlatField
from afrd.calibration.cli import calibration_cell, cell_parser, failed, output_dir, source
from afrd.calibration.exposure import frame_under, load_exposures
from afrd.errors import AfrdError, ConfigError, DataError

DEFAULT_FILE = "flatfield.npz"


# ------------------------------------------------------------------------------- capture
def capture_flatfield(
    controller,
    camera,
    conditions,
    frames: int = 4,
    timeout_s: float = 2.0,
    exposures: Mapping[str, float] | None = None,
):
    """Image the white target already in the cell: ``frames`` per lighting, plus as many dark
    frames (all lights off) per lighting, each at that lighting's exposure when ``exposures``
    is given. Returns (flats, darks) dicts light -> [n,H,W,3]."""
    flats, darks = {}, {}
    for cond in conditions:
        if exposures and cond.name in exposures:
            camera.set_exposure(exposures[cond.name])
        controller.all_off()
        darks[cond.name] = np.stack([_shot(camera, timeout_s) for _ in range(frames)])
        controller.apply(cond)
        flats[cond.name] = np.stack(
            [frame_under(controller, camera, cond, timeout_s) for _ in range(frames)]
        )
    controller.all_off()
    return flats, darks


def _shot(camera, timeout_s: float) -> np.ndarray:
    if camera.has_trigger:
        camera.trigger()
    return camera.grab(timeout_s)


def read_folder(folder: Path, lights: Sequence[str] | None):
    """White-target frames ``<light>.png`` / ``<light>_<n>.png``; dark frames
    ``dark_<light>[_<n>].png``, else common ``dark[_<n>].png``. ``lights`` None: every light
    that has a frame. Returns (flats, darks) dicts light -> [n,H,W,3]."""
    import re

    import cv2

    if not folder.is_dir():
        raise DataError(f"flat-field: image folder {folder} does not exist")
    exts = (".png", ".tif", ".tiff", ".bmp")
    stems: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in exts:
            base = re.sub(r"_\d+$", "", p.stem)
            stems.setdefault(base, []).append(p)

    def load(paths: list[Path]) -> np.ndarray:
        out = []
        for p in paths:
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is None:
                raise DataError(f"flat-field: cannot read image {p}")
            out.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        return np.stack(out)

    if lights is None:
        lights = [b for b in stems if b != "dark" and not b.startswith("dark_")]
    flats, darks = {}, {}
    for light in lights:
        if light not in stems:
            raise DataError(
                f"flat-field: no white-target image for light {light!r} in {folder} "
                f"(expected {light}.png or {light}_<n>.png)"
            )
        flats[light] = load(stems[light])
        dk = stems.get(f"dark_{light}") or stems.get("dark")
        if dk:
            darks[light] = load(dk)
    if not flats:
        raise DataError(f"flat-field: no images in {folder}")
    return flats, darks


# ------------------------------------------------------------------------------- CLI
PROG = "afrd calibrate flatfield"


def _parser() -> argparse.ArgumentParser:
    ap = cell_parser(
        PROG,
        "Per-lighting dark + flat-field correction from frames of a white target.",
        DEFAULT_FILE,
        images=True,
    )
    ap.add_argument("--frames", type=int, default=4, help="frames averaged per lighting")
    ap.add_argument("--max-gain", type=float, default=8.0)
    ap.add_argument(
        "--exposure", type=Path, help="exposure.json from `afrd calibrate exposure` to capture at"
    )
    return ap


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        out_dir = output_dir(args)
        if args.frames < 1:
            raise ConfigError("--frames must be >= 1")
        if args.images:
            lights = args.lights.split(",") if args.lights else None
            flats, darks = read_folder(args.images, lights)
            src, ident = f"images:{args.images}", None
        else:
            with calibration_cell(args) as (controller, camera, conds, ident):
                exposures = None
                if args.exposure:
                    exposures = load_exposures(args.exposure, [c.name for c in conds])
                flats, darks = capture_flatfield(
                    controller, camera, conds, args.frames, exposures=exposures
                )
            src = source(args)
        ff = FlatField.from_captures(flats, darks, max_gain=args.max_gain)
        ff.meta["source"] = src
        ff.meta["camera"] = ident
        ff.meta["frames"] = args.frames
        path = ff.save(out_dir / args.name)
        report = path.with_suffix(".json")
        report.write_text(json.dumps(ff.meta, indent=2) + "\n")
    except AfrdError as e:
        return failed(PROG, e)
    print(f"{'light':<12} {'white DN':>9} {'dark DN':>8} {'min/max':>8} {'gain range':>14}")
    for light, s in ff.meta["stats"].items():
        print(
            f"{light:<12} {s['white_mean_dn']:>9.1f} {s['dark_mean_dn']:>8.1f} "
            f"{s['uniformity_min_over_max']:>8.3f} {s['gain_min']:>6.3f}-{s['gain_max']:<7.3f}"
        )
    print(f"wrote {path} and {report}")
    print(f'reference it from the cell config, e.g. flatfield = "{path}"')
    return 0
