"""Exposure per lighting to a target grey level.

For each lighting, image the white (grey) target and adjust one knob until the frame's grey
level (``mean`` or a percentile of luminance) reaches ``target`` DN: the camera exposure
(``--knob exposure``, µs; the sequencer sets it before each light's trigger) or the light
level (``--knob level``: the condition's channel levels scaled, for cameras without exposure
control). Sensor response is linear below saturation, so the proportional step
``x <- x * target / grey`` converges in two or three frames; a saturated frame halves x.

Stored as ``exposure.json`` (schema ``afrd.exposure/1``) which the cell config references by
path; ``load_exposures(path)`` gives the ``{light: exposure_us}`` the Sequencer takes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence

import numpy as np

from afrd.acquire.correction import EXPOSURE_SCHEMA as SCHEMA
from afrd.acquire.correction import load_exposures  # noqa: F401 - re-exported
from afrd.acquire.lighting import LightingCondition
from afrd.calibration.cli import calibration_cell, cell_parser, failed, output_dir, source
from afrd.errors import AfrdError, ConfigError

DEFAULT_FILE = "exposure.json"
METRICS = ("mean", "p95", "p99")


def grey_level(image: np.ndarray, metric: str = "mean") -> float:
    """Luminance statistic of an RGB uint8 frame."""
    lum = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if metric == "mean":
        return float(lum.mean())
    if metric in ("p95", "p99"):
        return float(np.percentile(lum, int(metric[1:])))
    raise ConfigError(f"exposure: metric must be one of {METRICS}, got {metric!r}")


def search(
    shoot: Callable[[float], np.ndarray],
    start: float,
    target: float,
    lo: float,
    hi: float,
    metric: str = "mean",
    tol: float = 2.0,
    max_iter: int = 10,
) -> dict:
    """Find x in [lo, hi] with grey_level(shoot(x)) within ``tol`` of ``target``."""
    x = float(np.clip(start, lo, hi))
    history = []
    best = None
    for _ in range(max_iter):
        img = shoot(x)
        g = grey_level(img, metric)
        saturated = float((img.max(axis=-1) >= 255).mean())
        history.append({"x": round(x, 4), "grey": round(g, 2), "saturated": round(saturated, 4)})
        err = abs(g - target)
        if best is None or err < best[0]:
            best = (err, x, g)
        if err <= tol:
            break
        if saturated > 0.05 and g > target:
            nxt = x / 2
        elif g < 0.5:
            nxt = x * 8
        else:
            nxt = x * target / g
        nxt = float(np.clip(nxt, lo, hi))
        if nxt == x:  # pinned at a limit
            break
        x = nxt
    assert best is not None
    err, x, g = best
    return {
        "value": x,
        "grey": round(g, 2),
        "converged": err <= tol,
        "iterations": len(history),
        "history": history,
    }


def scale_condition(cond: LightingCondition, factor: float) -> LightingCondition:
    return LightingCondition(
        name=cond.name,
        channels=[
            s.model_copy(update={"level": round(min(100.0, s.level * factor), 3)})
            for s in cond.channels
        ],
    )


def calibrate(
    controller,
    camera,
    conditions: Sequence[LightingCondition],
    target: float = 128.0,
    knob: str = "exposure",
    metric: str = "mean",
    tol: float = 2.0,
    start_us: float = 1000.0,
    limits_us: tuple[float, float] = (10.0, 200_000.0),
    timeout_s: float = 2.0,
) -> dict:
    """Run the search for each condition with the target in view; returns the report dict."""
    if knob not in ("exposure", "level"):
        raise ConfigError(f"exposure: knob must be 'exposure' or 'level', got {knob!r}")
    if not 0 < target < 255:
        raise ConfigError(f"exposure: target grey must be in (0, 255), got {target}")
    out: dict = {}
    for cond in conditions:
        if knob == "exposure":
            controller.apply(cond)

            def shoot(x: float, cond: LightingCondition = cond) -> np.ndarray:
                camera.set_exposure(x)
                return frame_under(controller, camera, cond, timeout_s)

            r = search(shoot, start_us, target, *limits_us, metric=metric, tol=tol)
            out[cond.name] = {"exposure_us": round(r["value"], 2)}
        else:
            top = max((s.level for s in cond.channels), default=0.0)
            if top <= 0:
                raise ConfigError(f"exposure: lighting {cond.name!r} has no channel switched on")

            def shoot(x: float, cond: LightingCondition = cond) -> np.ndarray:
                c = scale_condition(cond, x)
                controller.apply(c)
                return frame_under(controller, camera, c, timeout_s)

            r = search(shoot, 1.0, target, 0.001, 100.0 / top, metric=metric, tol=tol)
            scaled = scale_condition(cond, r["value"])
            out[cond.name] = {
                "level_scale": round(r["value"], 4),
                "channels": [s.model_dump(exclude_defaults=True) for s in scaled.channels],
            }
        out[cond.name] |= {k: r[k] for k in ("grey", "converged", "iterations", "history")}
    controller.all_off()
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "knob": knob,
        "metric": metric,
        "target": target,
        "tolerance": tol,
        "lights": out,
    }


def frame_under(controller, camera, cond: LightingCondition, timeout_s: float) -> np.ndarray:
    """One frame with ``cond`` applied: trigger the camera, strobe a pulsed lighting, grab."""
    if camera.has_trigger:
        camera.trigger()
    if cond.pulsed:
        controller.strobe(cond)
    return camera.grab(timeout_s)


def lighting_toml(report: dict) -> str:
    """The calibrated levels as ``[[lighting]]`` tables to paste into the cell config."""
    lines = []
    for name, r in report["lights"].items():
        lines += ["[[lighting]]", f'name = "{name}"', "channels = ["]
        for c in r["channels"]:
            fields = ", ".join(f"{k} = {v}" for k, v in c.items())
            lines.append(f"  {{ {fields} }},")
        lines += ["]", ""]
    return "\n".join(lines)


PROG = "afrd calibrate exposure"


def _parser() -> argparse.ArgumentParser:
    ap = cell_parser(
        PROG,
        "Per-lighting exposure (or light level) to a target grey on a white target.",
        DEFAULT_FILE,
    )
    ap.add_argument("--target", type=float, default=128.0, help="target grey level, DN")
    ap.add_argument("--metric", choices=METRICS, default="mean")
    ap.add_argument("--knob", choices=("exposure", "level"), default="exposure")
    ap.add_argument("--tolerance", type=float, default=2.0, help="DN")
    ap.add_argument("--start-us", type=float, default=1000.0)
    return ap


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        out_dir = output_dir(args)
        with calibration_cell(args) as (controller, camera, conds, ident):
            report = calibrate(
                controller,
                camera,
                conds,
                target=args.target,
                knob=args.knob,
                metric=args.metric,
                tol=args.tolerance,
                start_us=args.start_us,
            )
        report["source"] = source(args)
        report["camera"] = ident
        path = out_dir / args.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    except AfrdError as e:
        return failed(PROG, e)
    key = "exposure_us" if args.knob == "exposure" else "level_scale"
    print(f"{'light':<12} {key:>12} {'grey':>7} {'iter':>5}  converged")
    for name, r in report["lights"].items():
        print(f"{name:<12} {r[key]:>12g} {r['grey']:>7.1f} {r['iterations']:>5}  {r['converged']}")
    print(f"wrote {path}")
    if args.knob == "level":
        print("calibrated lighting for the cell config:\n" + lighting_toml(report))
    else:
        print(f'reference it from the cell config, e.g. exposure = "{path}"')
    return 0 if all(r["converged"] for r in report["lights"].values()) else 1
