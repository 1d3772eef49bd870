"""`afrd capture --config cell.toml --count 50 --label good`: first data from a cell that has
no model yet.

Drives the same devices and sequencer as `afrd run` (the config's camera, lighting controller,
lighting conditions, and the product recipe's lighting levels, flat-field and exposures) and
writes each part's image set in the capture layout `afrd train --data` reads
(``afrd.data.capture``), without opening any model: the bundle a recipe names need not exist.

Parts come one after another (``--interval`` seconds apart, or ``--prompt``: after Enter, when
an operator loads each part by hand); with ``trigger.mode = "hardware"`` each part waits for
the camera's trigger line (a grab that times out means no part came and is tried again).
``--label good`` marks every set as a good part (label 0) for training; without it the sets
are unreviewed until `afrd label` marks them.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from afrd import cliargs
from afrd.errors import AfrdError, ConfigError, FrameTimeout

PROG = "afrd capture"
DESCRIPTION = (
    "record image sets from the cell (camera, lights, a recipe's calibration) without a model, "
    "in the capture layout afrd train reads"
)
LABELS = {"good": 0, "defective": 1, "none": None}


def _parser():
    ap = cliargs.parser(PROG, DESCRIPTION)
    ap.add_argument("--config", "-c", type=Path, required=True, help="cell config (TOML)")
    ap.add_argument("--count", "-n", type=int, required=True, help="parts to capture")
    ap.add_argument("--out", type=Path, help="capture root (default: the config's recorder.dir)")
    ap.add_argument(
        "--product", help="product name / [[product]] recipe (default: trigger.product)"
    )
    ap.add_argument(
        "--label",
        choices=sorted(LABELS),
        default="none",
        help="label every set: good (train on them), defective, or none (review later with "
        "afrd label)",
    )
    ap.add_argument("--lights", help="comma-separated lighting names (default: all the config's)")
    ap.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="share of sets kept out of training as the validation split (e.g. 0.2: every "
        "5th set; map statistics and the threshold are fitted on them)",
    )
    ap.add_argument(
        "--prefix", help="part id prefix (default cap-<UTC time>-; ids: <prefix><n, 5 digits>)"
    )
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between parts")
    ap.add_argument("--prompt", action="store_true", help="wait for Enter before each part")
    ap.add_argument(
        "--max-idle-s",
        type=float,
        default=600.0,
        help="hardware trigger: give up after this long without a part",
    )
    return ap


def _setup(cfg, product: str, lights: list[str] | None):
    """The acquisition setup of ``product``'s recipe over ``lights`` (default: every condition
    of the cell, in config order)."""
    from afrd.acquire.sequencer import Setup
    from afrd.config.recipes import recipe_specs

    specs = recipe_specs(cfg)
    if specs[0].name is None:
        spec = specs[0]
    else:
        by_name = {s.name: s for s in specs}
        if product not in by_name:
            raise ConfigError(
                f"{PROG}: product {product!r} has no [[product]] recipe in {cfg.cell!r}'s config "
                f"(recipes: {list(by_name)})"
            )
        spec = by_name[product]
    names = lights or [c.name for c in cfg.lighting]
    conds = spec.conditions_for(names)
    return Setup(conds, spec.flatfield, spec.exposures or {})


def capture(args) -> int:
    from afrd.acquire.devices import Devices
    from afrd.config.cell import load_config
    from afrd.data.capture import write_capture

    cfg = load_config(args.config)
    if args.count < 1:
        raise ConfigError(f"{PROG}: --count must be >= 1, got {args.count}")
    if not 0.0 <= args.holdout < 1.0:
        raise ConfigError(f"{PROG}: --holdout must be in [0, 1), got {args.holdout}")
    product = args.product or cfg.trigger.product
    setup = _setup(cfg, product, args.lights.split(",") if args.lights else None)
    out = args.out or cfg.recorder.dir
    label = LABELS[args.label]
    prefix = args.prefix or time.strftime("cap-%Y%m%dT%H%M%S-", time.gmtime())
    hardware = cfg.trigger.mode == "hardware"
    done = 0
    with Devices(cfg.camera, cfg.controller, cfg.trigger.mode) as devices:
        seq = devices.sequencer(setup.conditions)
        last_part = time.monotonic()
        while done < args.count:
            if args.prompt:
                input(f"part {done + 1}/{args.count}: load it and press Enter ")
            part_id = f"{prefix}{done + 1:05d}"
            t0 = time.monotonic()
            try:
                imageset = seq.acquire(part_id, product, setup)
            except FrameTimeout:
                if hardware and time.monotonic() - last_part < args.max_idle_s:
                    continue  # no part on the line yet
                raise
            last_part = time.monotonic()
            imageset.label = label  # the operator's word, not the simulator's ground truth
            imageset.mask = None
            held = math.floor((done + 1) * args.holdout) > math.floor(done * args.holdout)
            meta = {"source": "afrd capture", "config": str(args.config)}
            path = write_capture(out, imageset, {"label": label, "holdout": held, "meta": meta})
            done += 1
            print(f"{done}/{args.count} {path}", flush=True)
            if args.interval > 0 and done < args.count:
                time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    what = {0: "labelled good", 1: "labelled defective", None: "unreviewed"}[label]
    print(f"captured {done} sets of product {product!r} into {out} ({what})")
    if label is None:
        print(f"next: afrd label {out} --all --good (or by --part / --day), then afrd train")
    else:
        print(f"next: afrd train --data {out} --model memory (or --preset cpu)")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(cliargs.take_global_flags(argv))
    cliargs.setup_logging()
    try:
        return capture(args)
    except AfrdError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if not isinstance(exc, FrameTimeout) else 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
