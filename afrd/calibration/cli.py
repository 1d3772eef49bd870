"""`afrd calibrate threshold|flatfield|exposure`: dispatch to each calibration's own module.

Also the command-line pieces the calibrations imaged on the cell (flat-field, exposure) share:
their source options and output folder, the cell they open, and how they report an error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from afrd import cliargs

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "threshold": (
        "afrd.calibration.threshold",
        "set a bundle's threshold from held-out normal sets",
    ),
    "flatfield": ("afrd.calibration.flatfield", "flat-field and dark correction per lighting"),
    "exposure": ("afrd.calibration.exposure", "exposure per lighting to a target grey level"),
}


def _usage() -> str:
    lines = ["usage: afrd calibrate {" + ",".join(SUBCOMMANDS) + "} [options]", ""]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    argv = cliargs.take_global_flags(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if not argv or argv[0] not in SUBCOMMANDS:
        what = f"unknown calibration {argv[0]!r}" if argv else "a calibration is required"
        print(f"afrd calibrate: {what}\n\n{_usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(SUBCOMMANDS[argv[0]][0]).main(argv[1:]) or 0)


# ------------------------------------------------------------ shared by flatfield and exposure
def cell_parser(
    prog: str, description: str, default_file: str, images: bool = False
) -> argparse.ArgumentParser:
    """--sim | --config (| --images), --out, --name, --lights, --image-size; the caller adds its own."""
    ap = cliargs.parser(prog, description)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", action="store_true", help="calibrate the simulated cell")
    src.add_argument("--config", type=Path, help="cell config (TOML): calibrate that cell")
    if images:
        src.add_argument("--images", type=Path, help="folder of white-target and dark frames")
    ap.add_argument("--out", type=Path, help="output folder (default: the config's folder)")
    ap.add_argument("--name", default=default_file, help="file name")
    ap.add_argument("--lights", help="comma-separated lighting names (default: all)")
    ap.add_argument("--product", help="--config: under this [[product]] recipe's lighting levels")
    ap.add_argument("--image-size", type=int, default=128, help="--sim: image size in pixels")
    return ap


def output_dir(args: argparse.Namespace) -> Path:
    """--out, else the config's folder; ConfigError when neither is given."""
    from afrd.errors import ConfigError

    if args.out:
        return Path(args.out)
    if args.config:
        return args.config.parent
    others = "/--images" if "images" in vars(args) else ""
    raise ConfigError(f"--out is required with --sim{others}")


def source(args: argparse.Namespace) -> str:
    """Where the frames came from, for the report: ``sim`` or ``config:<path>``."""
    return "sim" if args.sim else f"config:{args.config}"


@contextmanager
def calibration_cell(args: argparse.Namespace) -> Iterator[tuple]:
    """(controller, camera, conditions, camera identity) of --sim or --config, open while
    inside; the camera shows the white target (the simulated one does; real cameras ignore it).
    The identity (kind, serial) goes into the calibration file so `afrd config check` can
    refuse it on another camera."""
    from afrd.acquire.camera import WHITE_TARGET
    from afrd.acquire.devices import Devices, camera_identity
    from afrd.acquire.registry import device_kind
    from afrd.config.cell import load_config
    from afrd.data.lights import DEFAULT_LIGHTS
    from afrd.errors import ConfigError

    lights = args.lights.split(",") if args.lights else None
    if args.sim:
        # the simulated cell's kinds, named as a config names them (the simulator registers them)
        camera, controller = device_kind("camera", "sim"), device_kind("controller", "sim")
        devices = Devices(camera.config(size=args.image_size), controller.config())
        conds = controller.conditions(lights or DEFAULT_LIGHTS)
    else:
        cfg = load_config(args.config)
        names = lights or [c.name for c in cfg.lighting]
        conds = cfg.conditions_for(names, source="calibration")
        if getattr(args, "product", None):
            recipes = {p.name: p for p in cfg.product}
            if args.product not in recipes:
                raise ConfigError(
                    f"--product {args.product!r}: no such [[product]] in {args.config} "
                    f"(have {list(recipes)})"
                )
            relevel = {c.name: c for c in recipes[args.product].lighting}
            conds = [relevel.get(c.name, c) for c in conds]
        devices = Devices(cfg.camera, cfg.controller, cfg.trigger.mode)
    # unlike the daemon, calibration needs the controller from the start
    with devices:
        devices.camera.start_part(WHITE_TARGET)
        ident = camera_identity(devices.camera_config, devices.camera)
        yield devices.controller, devices.camera, conds, ident


def failed(prog: str, exc: Exception) -> int:
    """Report a calibration error on stderr; the exit code for it (2)."""
    print(f"{prog}: {exc}", file=sys.stderr)
    return 2
