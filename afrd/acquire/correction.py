"""The per-lighting image corrections the sequencer applies, and the calibration files they
come from: flat-field/dark (``afrd calibrate flatfield`` writes the ``.npz``) and exposure
(``afrd calibrate exposure`` writes ``exposure.json``).

They live here, below the config and the calibration commands, because the cell config names
the files, `afrd config check` verifies them and the sequencer applies them; the calibration
commands (``afrd.calibration``) only measure and write them. Each file's ``meta`` records the
lights, the frame shape and the camera (kind, serial) it was made with.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from afrd.errors import ConfigError, DataError

FLATFIELD_SCHEMA = "afrd.flatfield/1"
EXPOSURE_SCHEMA = "afrd.exposure/1"
SCHEMA = FLATFIELD_SCHEMA


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
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            # a truncated or foreign file: np.load raises BadZipFile/EOFError from deep inside
            raise ConfigError(
                f"flat-field file {path}: cannot read ({type(e).__name__}: {e}); expected an "
                "`afrd calibrate flatfield` .npz"
            ) from None
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


def load_exposures(
    path: str | Path, expect_lights: Sequence[str] | None = None
) -> dict[str, float]:
    """``{light: exposure_us}`` from an ``exposure.json`` (knob ``exposure``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"exposure file {path}: cannot read ({e})") from e
    if data.get("schema") != EXPOSURE_SCHEMA:
        raise ConfigError(
            f"exposure file {path}: schema {data.get('schema')!r}, expected {EXPOSURE_SCHEMA!r}"
        )
    if data.get("knob") != "exposure":
        raise ConfigError(
            f"exposure file {path}: calibrated light levels (knob {data.get('knob')!r}), not "
            "exposures: copy its channel levels into the config's [[lighting]] instead"
        )
    lights = data.get("lights", {})
    missing = [n for n in (expect_lights or ()) if n not in lights]
    if missing:
        raise ConfigError(f"exposure file {path}: no exposure for lights {missing}")
    return {k: float(v["exposure_us"]) for k, v in lights.items()}
