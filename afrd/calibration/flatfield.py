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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from afrd.calibration.cli import calibration_cell, cell_parser, failed, output_dir, source
from afrd.calibration.exposure import frame_under, load_exposures
from afrd.errors import AfrdError, ConfigError, DataError

SCHEMA = "afrd.flatfield/1"
DEFAULT_FILE = "flatfield.npz"


def _mean_frames(frames: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"flat-field: {what} must be HxWx3 frames, got shape {arr.shape}")
    return arr.astype(np.float32).mean(axis=0)


class FlatField:
    """Per-lighting dark and gain maps; ``correct(light, image)`` is what the sequencer calls."""

    def __init__(
        self,
        darks: Mapping[str, np.ndarray],
        gains: Mapping[str, np.ndarray],
        meta: dict | None = None,
        path: Path | None = None,
    ) -> None:
        if set(darks) != set(gains):
            raise DataError(
                f"flat-field: dark lights {sorted(darks)} != gain lights {sorted(gains)}"
            )
        self.darks = {k: np.asarray(v, np.float32) for k, v in darks.items()}
        self.gains = {k: np.asarray(v, np.float32) for k, v in gains.items()}
        self.meta = dict(meta or {})
        self.path = path

    @property
    def lights(self) -> tuple[str, ...]:
        return tuple(self.gains)

    @classmethod
    def from_captures(
        cls,
        flats: Mapping[str, np.ndarray | Sequence[np.ndarray]],
        darks: Mapping[str, np.ndarray | Sequence[np.ndarray]] | None = None,
        max_gain: float = 8.0,
        min_signal: float = 8.0,
    ) -> FlatField:
        """Maps from white-target frames (per light, one frame or a stack to average) and dark
        frames (per light; missing -> zero). Refuses a target too dark or saturated to use."""
        d_out, g_out, stats = {}, {}, {}
        for light, ff in flats.items():
            flat = _mean_frames(ff, f"white-target frames of {light!r}")
            if darks is not None and light in darks:
                dark = _mean_frames(darks[light], f"dark frames of {light!r}")
                if dark.shape != flat.shape:
                    raise DataError(
                        f"flat-field: dark frames of {light!r} are {dark.shape}, flats {flat.shape}"
                    )
            else:
                dark = np.zeros_like(flat)
            sig = flat - dark
            level = float(sig.mean())
            if level < min_signal:
                raise DataError(
                    f"flat-field: white target under {light!r} reads {level:.1f} DN above dark "
                    f"(need >= {min_signal}): is the lighting on and the target in view?"
                )
            sat = float((flat >= 254.5).mean())
            if sat > 0.01:
                raise DataError(
                    f"flat-field: white target under {light!r} is saturated in {sat:.1%} of "
                    "pixels: lower the exposure or the light level (afrd calibrate exposure)"
                )
            mean_c = sig.reshape(-1, 3).mean(axis=0)
            gain = mean_c / np.maximum(sig, mean_c / max_gain)
            d_out[light], g_out[light] = dark, gain.astype(np.float32)
            lum = sig.mean(-1)
            stats[light] = {
                "white_mean_dn": round(level, 2),
                "dark_mean_dn": round(float(dark.mean()), 2),
                "uniformity_min_over_max": round(float(lum.min() / max(lum.max(), 1e-6)), 4),
                "gain_min": round(float(gain.min()), 4),
                "gain_max": round(float(gain.max()), 4),
            }
        meta = {
            "schema": SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "shape": list(next(iter(d_out.values())).shape) if d_out else None,
            "lights": list(g_out),
            "stats": stats,
        }
        return cls(d_out, g_out, meta)

    def correct(self, light: str, image: np.ndarray) -> np.ndarray:
        """``(image - dark) * gain`` as uint8; a light without calibration passes unchanged."""
        gain = self.gains.get(light)
        if gain is None:
            return image
        if image.shape != gain.shape:
            raise ConfigError(
                f"flat-field {self.path or ''}: light {light!r} calibrated at {gain.shape}, "
                f"frame is {image.shape}: recalibrate (afrd calibrate flatfield)"
            )
        out = (image.astype(np.float32) - self.darks[light]) * gain
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"dark/{k}": v.astype(np.float32) for k, v in self.darks.items()}
        arrays |= {f"gain/{k}": v for k, v in self.gains.items()}
        arrays["meta"] = np.frombuffer(json.dumps(self.meta).encode(), np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path, expect_lights: Sequence[str] | None = None) -> FlatField:
        """Read a calibration; ConfigError naming the file if it is missing, of another schema,
        or lacks a light in ``expect_lights``."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                darks = {k[5:]: z[k] for k in z.files if k.startswith("dark/")}
                gains = {k[5:]: z[k] for k in z.files if k.startswith("gain/")}
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"flat-field file {path}: cannot read ({e})") from e
        if meta.get("schema") != SCHEMA:
            raise ConfigError(
                f"flat-field file {path}: schema {meta.get('schema')!r}, expected {SCHEMA!r}"
            )
        missing = [n for n in (expect_lights or ()) if n not in gains]
        if missing:
            raise ConfigError(
                f"flat-field file {path}: no calibration for lights {missing} (has {sorted(gains)})"
            )
        return cls(darks, gains, meta, path)


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
            src = f"images:{args.images}"
        else:
            with calibration_cell(args) as (controller, camera, conds):
                exposures = None
                if args.exposure:
                    exposures = load_exposures(args.exposure, [c.name for c in conds])
                flats, darks = capture_flatfield(
                    controller, camera, conds, args.frames, exposures=exposures
                )
            src = source(args)
        ff = FlatField.from_captures(flats, darks, max_gain=args.max_gain)
        ff.meta["source"] = src
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
