"""`afrd config check FILE`: validate a cell config (and its bundle's lights) without running."""

from __future__ import annotations

import argparse
import sys

from afrd.errors import AfrdError


def check(path: str, bundle: bool = True) -> list[str]:
    """Every problem with the config at ``path`` as lines; empty when it is good."""
    from afrd.config.cell import check_bundle_lights, load_config

    try:
        cfg = load_config(path)
    except AfrdError as exc:
        return str(exc).splitlines()
    if bundle:
        if not cfg.bundle.path.exists():
            return [f"{path}: bundle.path: no bundle at {cfg.bundle.path}"]
        try:
            check_bundle_lights(cfg)
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
