"""Product recipes: what the cell config says one product is inspected with.

A recipe is a bundle, a threshold, the lighting conditions (the cell's, re-levelled by the
product's own ``lighting``), the flat-field/dark file and the exposure file. Without
``[[product]]`` blocks the cell has one recipe (``name`` None) built from its top-level keys and
the trigger's ``product`` is only a label. Unset product keys take the cell's top-level value.

Calibration files are read and verified here, once per file, so `afrd config check` and
`afrd run` refuse the same mismatches: a file made on another kind of camera or another camera
serial, at another frame shape, or lacking one of the bundle's lights. Nothing here opens an
engine: the daemon does (``afrd.daemon.recipes.open_recipes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afrd.acquire.correction import FlatField, load_exposures
from afrd.acquire.devices import frame_shape
from afrd.acquire.lighting import LightingCondition
from afrd.config.cell import CellConfig
from afrd.errors import ConfigError


@dataclass
class RecipeSpec:
    """One recipe as the config resolves it (files loaded, no engine opened)."""

    name: str | None  # None: the cell has no [[product]] blocks
    where: str  # the config location, for messages: "product[1] ('b')" or "the cell"
    bundle: Path
    threshold: float | None  # None: the bundle's calibrated threshold
    lighting: dict[str, LightingCondition]
    flatfield: FlatField | None
    exposures: dict[str, float] | None
    flatfield_path: Path | None = None
    exposure_path: Path | None = None

    def conditions_for(self, lights: tuple[str, ...] | list[str]) -> list[LightingCondition]:
        """The conditions in ``lights`` order, and a check that both calibration files cover
        them; ConfigError naming the recipe otherwise."""
        missing = [n for n in lights if n not in self.lighting]
        if missing:
            raise ConfigError(
                f"lighting: {self.where}: bundle {self.bundle} needs lights {list(lights)}, the "
                f"config has no condition named {missing} (configured: {sorted(self.lighting)})"
            )
        if self.flatfield is not None:
            lack = [n for n in lights if n not in self.flatfield.gains]
            if lack:
                raise ConfigError(
                    f"flatfield: {self.where}: {self.flatfield_path} has no calibration for "
                    f"lights {lack} the bundle uses (has {sorted(self.flatfield.gains)}); "
                    "recalibrate with `afrd calibrate flatfield --config ...`"
                )
        if self.exposures is not None:
            lack = [n for n in lights if n not in self.exposures]
            if lack:
                raise ConfigError(
                    f"exposure: {self.where}: {self.exposure_path} has no exposure for lights "
                    f"{lack} the bundle uses; recalibrate with `afrd calibrate exposure`"
                )
        return [self.lighting[n] for n in lights]


def _check_camera(cfg: CellConfig, meta_camera: Any, what: str) -> None:
    """Refuse a calibration file made with another kind of camera or another serial."""
    if not isinstance(meta_camera, dict):
        return  # made from an image folder, or by an older afrd: nothing recorded to compare
    kind, serial = meta_camera.get("kind"), meta_camera.get("serial")
    if kind is not None and kind != cfg.camera.kind:
        raise ConfigError(
            f"{what}: made with a {kind!r} camera, the cell's camera is {cfg.camera.kind!r}; "
            "recalibrate on this cell"
        )
    ours = getattr(cfg.camera, "serial", None)
    if serial is not None and ours is not None and str(serial) != str(ours):
        raise ConfigError(
            f"{what}: made with camera serial {serial!r}, the cell's camera.serial is "
            f"{ours!r}; recalibrate on this camera"
        )


def load_flatfield(cfg: CellConfig, path: Path, where: str) -> FlatField:
    what = f"flatfield: {where}: {path}"
    if not path.exists():
        raise ConfigError(f"{what}: no such file (run `afrd calibrate flatfield`)")
    ff = FlatField.load(path)
    _check_camera(cfg, ff.meta.get("camera"), what)
    want = frame_shape(cfg.camera)
    got = ff.meta.get("shape")
    if want is not None and got is not None and tuple(got) != tuple(want):
        raise ConfigError(
            f"{what}: calibrated at frame shape {list(got)}, the camera delivers {list(want)}; "
            "recalibrate at this size"
        )
    return ff


def _exposure_camera(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text()).get("camera")
    except (OSError, ValueError, AttributeError):
        return None  # load_exposures reports an unreadable file


def check_opened_camera(specs: list[RecipeSpec], identity: dict[str, Any]) -> None:
    """After the camera is open: refuse calibration files made with another serial than the
    device's (the config may pick the camera by model or name, so check can not know it)."""
    serial = identity.get("serial")
    if serial is None:
        return
    for spec in specs:
        files = []
        if spec.flatfield is not None:
            files.append(("flatfield", spec.flatfield_path, spec.flatfield.meta.get("camera")))
        if spec.exposure_path is not None:
            files.append(("exposure", spec.exposure_path, _exposure_camera(spec.exposure_path)))
        for key, path, cam in files:
            made = cam.get("serial") if isinstance(cam, dict) else None
            if made is not None and str(made) != str(serial):
                raise ConfigError(
                    f"{key}: {spec.where}: {path}: made with camera serial {made!r}, the camera "
                    f"opened is {serial!r}; recalibrate on this camera"
                )


def load_exposure_file(cfg: CellConfig, path: Path, where: str) -> dict[str, float]:
    what = f"exposure: {where}: {path}"
    if not path.exists():
        raise ConfigError(f"{what}: no such file (run `afrd calibrate exposure`)")
    exposures = load_exposures(path)
    _check_camera(cfg, _exposure_camera(path), what)
    bad = {k: v for k, v in exposures.items() if not 0 < v <= 1e7}
    if bad:
        raise ConfigError(f"{what}: exposures must be in (0, 1e7] us, got {bad}")
    return exposures


def recipe_specs(cfg: CellConfig) -> list[RecipeSpec]:
    """Every recipe of the config, calibration files loaded and verified (each file once)."""
    flats: dict[Path, FlatField] = {}
    exps: dict[Path, dict[str, float]] = {}

    def flat(path: Path | None, where: str) -> FlatField | None:
        if path is None:
            return None
        if path not in flats:
            flats[path] = load_flatfield(cfg, path, where)
        return flats[path]

    def exp(path: Path | None, where: str) -> dict[str, float] | None:
        if path is None:
            return None
        if path not in exps:
            exps[path] = load_exposure_file(cfg, path, where)
        return exps[path]

    cell_lighting = {c.name: c for c in cfg.lighting}
    if not cfg.product:
        return [
            RecipeSpec(
                name=None,
                where="the cell",
                bundle=cfg.bundle.path,
                threshold=cfg.threshold,
                lighting=cell_lighting,
                flatfield=flat(cfg.flatfield, "the cell"),
                exposures=exp(cfg.exposure, "the cell"),
                flatfield_path=cfg.flatfield,
                exposure_path=cfg.exposure,
            )
        ]
    out = []
    for i, p in enumerate(cfg.product):
        where = f"product[{i}] ({p.name!r})"
        ff_path = p.flatfield or cfg.flatfield
        ex_path = p.exposure or cfg.exposure
        out.append(
            RecipeSpec(
                name=p.name,
                where=where,
                bundle=p.bundle or cfg.bundle.path,
                threshold=p.threshold if p.threshold is not None else cfg.threshold,
                lighting=cell_lighting | {c.name: c for c in p.lighting},
                flatfield=flat(ff_path, where),
                exposures=exp(ex_path, where),
                flatfield_path=ff_path,
                exposure_path=ex_path,
            )
        )
    return out
