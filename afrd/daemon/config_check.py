"""`afrd config check FILE`: every check `afrd run` makes before it opens a device.

The config's keys and values, the sockets (CURVE keys for a wide control bind, ipc:// paths
another live process holds), the bundle (schema, fields, sha256 of every file, threshold), the
config's lighting against the bundle's lights, the calibration files (flat-field, exposure:
readable, made with this camera kind and serial, at this frame shape, covering the bundle's
lights), every [[product]] recipe, and each bundle's engine opened and warmed (a graph that does
not load, or takes another input size, is found here, not at start-up). The config reads
(``afrd.config``); the engines are opened as the daemon opens them (``open_recipes``).
"""

from __future__ import annotations

import argparse
import sys

from afrd.config.cell import load_config
from afrd.config.check import check_sockets
from afrd.config.recipes import recipe_specs
from afrd.daemon.recipes import open_recipes
from afrd.errors import AfrdError


def check(path: str, bundle: bool = True) -> list[str]:
    """Every problem with the config at ``path`` as lines; empty when it is good."""
    try:
        cfg = load_config(path)
        check_sockets(cfg)
    except AfrdError as exc:
        return str(exc).splitlines()
    try:
        specs = recipe_specs(cfg)  # calibration files: readable, this camera, this frame shape
    except AfrdError as exc:
        return [f"{path}: {exc}"]
    if bundle:
        for spec in specs:
            if not spec.bundle.exists():
                key = "bundle.path" if spec.name is None else f"{spec.where}.bundle"
                return [f"{path}: {key}: no bundle at {spec.bundle}"]
        try:
            for r in {id(r.runtime): r.runtime for r in open_recipes(cfg, specs)}.values():
                r.close()
        except AfrdError as exc:
            return [f"{path}: {exc}"]
    return []


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="afrd config", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a cell config file")
    c.add_argument("file")
    c.add_argument("--no-bundle", action="store_true", help="do not open the model bundle")
    args = p.parse_args(argv)
    problems = check(args.file, bundle=not args.no_bundle)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    return 0
