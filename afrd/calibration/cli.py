"""`afrd calibrate threshold|flatfield|exposure`: dispatch to each calibration's own module."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "threshold": ("afrd.calibration.threshold", "set a bundle's threshold from held-out normal sets"),
    "flatfield": ("afrd.calibration.flatfield", "flat-field and dark correction per lighting"),
    "exposure": ("afrd.calibration.exposure", "exposure per lighting to a target grey level"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: afrd calibrate {" + ",".join(SUBCOMMANDS) + "} [options]\n")
        for name, (_, help_) in SUBCOMMANDS.items():
            print(f"  {name:<10} {help_}")
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"afrd calibrate: unknown calibration {argv[0]!r}", file=sys.stderr)
        return 2
    return int(importlib.import_module(SUBCOMMANDS[argv[0]][0]).main(argv[1:]) or 0)
