"""`afrd-export` (also `afrd export`): onnx | trt | int8 | show.

afrd-export onnx CHECKPOINT --out BUNDLE [--opset 18] [--data DIR] [--force]
afrd-export trt BUNDLE [--fp16 | --int8 --data DIR] [--workspace MB] [--max-batch N]
afrd-export int8 BUNDLE --data DIR         static INT8 QDQ variant for ONNX Runtime
afrd-export fp16 BUNDLE [--data DIR]       fp16 variant (what `trt --fp16` builds from)
afrd-export check BUNDLE FILE [--data DIR] parity-check a variant, calibrate its own threshold
afrd-export show BUNDLE [--lights a,b,..]  verify a bundle and print what it holds

Every variant written (fp16, int8) is run beside model.onnx on held-out image sets (--data
ROOT, split val; default: the data the bundle's threshold was calibrated on), refused past the
parity limits, and given its own threshold (afrd.export.variant_check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from afrd import cliargs
from afrd.errors import AfrdError, ConfigError
from afrd.export.variant_check import ParityTolerance


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser("afrd-export", __doc__.split("\n\n")[0])
    sub = cliargs.subparsers(p)

    o = sub.add_parser("onnx", help="export a checkpoint to a bundle (model.onnx + bundle.json)")
    o.add_argument("checkpoint", type=Path)
    o.add_argument("--out", type=Path, required=True, help="bundle directory (empty or new)")
    o.add_argument("--opset", type=int, default=18)
    o.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    o.add_argument(
        "--exporter",
        default="auto",
        choices=("auto", "dynamo", "torchscript"),
        help="auto: dynamo, falling back to TorchScript if dynamo fails",
    )
    cliargs.add_dataset_args(
        o,
        required=False,
        split="test_public",
        split_help="split of --data for the parity check",
        category_help="category of --data (one)",
    )
    o.add_argument("--name", help="bundle name (default: the directory name)")
    o.add_argument("--atol", type=float, default=1e-4, help="parity tolerance, absolute")
    o.add_argument(
        "--rtol", type=float, default=1e-3, help="parity tolerance, relative to max|PyTorch output|"
    )

    t = sub.add_parser("trt", help="build a TensorRT engine into a bundle (on the target GPU)")
    t.add_argument("bundle", type=Path)
    prec = t.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="build from an fp16 ONNX variant")
    prec.add_argument("--int8", action="store_true", help="build from an INT8 QDQ variant")
    _calibration_args(t, required=False)
    t.add_argument("--workspace", type=int, default=4096, help="builder workspace, MiB")
    t.add_argument("--max-batch", type=int, default=8, help="optimization profile: batch 1..N")
    t.add_argument("--device", type=int, default=0, help="CUDA device ordinal")

    q = sub.add_parser("int8", help="static INT8 QDQ variant (model.int8.onnx) for ONNX Runtime")
    q.add_argument("bundle", type=Path)
    _calibration_args(q, required=True)

    h = sub.add_parser("fp16", help="fp16 variant (model.fp16.onnx), checked against model.onnx")
    h.add_argument("bundle", type=Path)
    cliargs.add_dataset_args(h, required=False, category_help="category of --data (one)")
    _check_args(h)

    c = sub.add_parser(
        "check", help="parity-check a precision variant against model.onnx, set its threshold"
    )
    c.add_argument("bundle", type=Path)
    c.add_argument("file", help="the variant, e.g. model.int8.onnx")
    cliargs.add_dataset_args(c, required=False, category_help="category of --data (one)")
    _check_args(c)

    s = sub.add_parser("show", help="verify a bundle (sha256, schema) and print bundle.json")
    s.add_argument("bundle", type=Path)
    s.add_argument("--lights", help="comma-separated lights the cell expects, in order")
    return p


def _calibration_args(p: argparse.ArgumentParser, required: bool) -> None:
    cliargs.add_dataset_args(
        p,
        required=required,
        split="train",
        split_help="split of --data whose normal sets calibrate the INT8 ranges",
        category_help="category of --data (one)",
    )
    p.add_argument("--sets", type=int, default=32, help="how many normal sets calibrate")
    _check_args(p)


def _check_args(p: argparse.ArgumentParser) -> None:
    """The variant check's options (afrd.export.variant_check)."""
    tol = ParityTolerance()
    p.add_argument(
        "--check-split",
        action="append",
        metavar="S",
        help="split(s) of held-out sets the variant is checked and calibrated on (repeatable; "
        "default: val of --data, else the splits the bundle's threshold came from)",
    )
    p.add_argument(
        "--frr",
        type=float,
        help="target FRR of the variant's threshold (default: the one the bundle's threshold "
        "was set for, else 0.01)",
    )
    p.add_argument(
        "--max-score-diff",
        type=float,
        default=tol.score,
        help="parity limit: max |score difference| in std of model.onnx's normal scores",
    )
    p.add_argument(
        "--max-map-diff",
        type=float,
        default=tol.map,
        help="parity limit: max |map difference| as a fraction of model.onnx's map range",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=tol.agreement,
        help="parity limit: least share of held-out sets judged alike (each at its threshold)",
    )
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")


def _cmd_onnx(a: argparse.Namespace) -> int:
    from afrd.export.onnx_export import Tolerance, export_onnx, validate_args

    validate_args(a.checkpoint, a.out, a.opset, a.force, a.exporter)  # before importing torch
    data = _data_dir(a, needed=False)
    bundle = export_onnx(
        a.checkpoint,
        a.out,
        opset=a.opset,
        force=a.force,
        exporter=a.exporter,
        data=data,
        data_split=a.split,
        data_category=cliargs.one_category(a.category),
        tolerance=Tolerance(a.atol, a.rtol),
        name=a.name,
    )
    print(
        f"bundle {bundle.path}: lights {list(bundle.lights)}, input {bundle.input_size}, "
        f"model.onnx sha256 {bundle.sha256[:16]}.."
    )
    return 0


def _data_dir(a: argparse.Namespace, needed: bool) -> Path | None:
    if a.data is None:
        if needed:
            raise ConfigError("--int8 needs --data DIR (normal image sets to calibrate the ranges)")
        return None
    data = Path(a.data)
    if not data.is_dir():
        raise ConfigError(f"--data {data} is not a directory")
    return data


def _calib_sets(a: argparse.Namespace, bundle):  # noqa: ANN001, ANN202
    from afrd.export.precision import calibration_sets

    data = _data_dir(a, needed=True)
    return calibration_sets(data, bundle, a.split, cliargs.one_category(a.category), a.sets)


class _Check:
    """A variant check, its arguments validated and its held-out sets read (before any
    conversion work): ``run(file, made_here)`` checks one variant and prints the result."""

    def __init__(self, a: argparse.Namespace, bundle) -> None:  # noqa: ANN001
        from afrd.export.variant_check import default_frr, heldout_sets, heldout_source

        frr = default_frr(bundle) if a.frr is None else a.frr
        if not 0.0 <= frr < 1.0:
            raise ConfigError(f"--frr must be in [0, 1), got {frr}")
        limits = (a.max_score_diff, a.max_map_diff, a.min_agreement)
        if min(limits) < 0 or a.min_agreement > 1:
            raise ConfigError(
                "--max-score-diff and --max-map-diff must be >= 0, --min-agreement in [0, 1]"
            )
        self.bundle, self.frr, self.threads = bundle, frr, a.threads
        self.tolerance = ParityTolerance(*limits)
        category = cliargs.one_category(a.category)
        self.source = heldout_source(bundle, a.data, a.check_split, category)
        self.sets = heldout_sets(bundle, self.source)

    def run(self, onnx_file: str, made_here: bool) -> None:
        from afrd.export.variant_check import check_variant, summary
        from afrd.runtime.threshold_stats import print_report

        r = check_variant(
            self.bundle,
            onnx_file,
            self.sets,
            self.frr,
            self.tolerance,
            self.source,
            self.threads,
            made_here,
        )
        print(summary(r, onnx_file))
        print_report(r, onnx_file)


def _cmd_trt(a: argparse.Namespace) -> int:
    from afrd.export.precision import FP16_FILE, INT8_FILE, make_fp16, make_int8_qdq
    from afrd.runtime.bundle import Bundle
    from afrd.runtime.engines import tensorrt as trt_mod

    bundle = Bundle.load(a.bundle)
    if a.int8:
        _data_dir(a, needed=True)
    if a.max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {a.max_batch}")
    trt_mod._require_trt()  # fail before any conversion work
    onnx_file, precision = "model.onnx", "fp32"
    if a.fp16:
        check = _Check(a, bundle)
        make_fp16(bundle)
        check.run(FP16_FILE, made_here=True)
        onnx_file, precision = FP16_FILE, "fp16"
    elif a.int8:
        check = _Check(a, bundle)
        make_int8_qdq(bundle, _calib_sets(a, bundle))
        check.run(INT8_FILE, made_here=True)
        onnx_file, precision = INT8_FILE, "int8"
    path = trt_mod.build_engine(bundle, onnx_file, precision, a.max_batch, 1, a.workspace, a.device)
    print(
        f"engine {path} ({precision}, batch 1..{a.max_batch}) recorded in {bundle.path}/bundle.json"
    )
    return 0


def _cmd_int8(a: argparse.Namespace) -> int:
    from afrd.export.precision import make_int8_qdq
    from afrd.runtime.bundle import Bundle

    bundle = Bundle.load(a.bundle)
    check = _Check(a, bundle)
    path = make_int8_qdq(bundle, _calib_sets(a, bundle))
    check.run(path.name, made_here=True)
    print(f"wrote {path}; use it with [engine] options onnx_file = '{path.name}'")
    return 0


def _cmd_fp16(a: argparse.Namespace) -> int:
    from afrd.export.precision import make_fp16
    from afrd.runtime.bundle import Bundle

    bundle = Bundle.load(a.bundle)
    check = _Check(a, bundle)
    path = make_fp16(bundle)
    check.run(path.name, made_here=True)
    print(f"wrote {path}; use it with [engine] options onnx_file = '{path.name}'")
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from afrd.runtime.bundle import ONNX_FILE, Bundle

    bundle = Bundle.load(a.bundle)
    if a.file == ONNX_FILE:
        raise ConfigError(f"{ONNX_FILE} is the reference, not a precision variant")
    bundle.file(a.file)  # BundleError naming a file the bundle does not list
    _Check(a, bundle).run(a.file, made_here=False)
    print(f"stored the check and threshold of {a.file} in {bundle.path}/bundle.json")
    return 0


def _cmd_show(a: argparse.Namespace) -> int:
    from afrd.runtime.bundle import Bundle

    lights = [s.strip() for s in a.lights.split(",")] if a.lights else None
    bundle = Bundle.load(a.bundle, expect_lights=lights)
    print(json.dumps(bundle.meta, indent=2))
    print(f"OK: {bundle.path} verified ({len(bundle.meta['files'])} files)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(cliargs.take_global_flags(sys.argv[1:] if argv is None else argv))
    handler = {
        "onnx": _cmd_onnx,
        "trt": _cmd_trt,
        "int8": _cmd_int8,
        "fp16": _cmd_fp16,
        "check": _cmd_check,
        "show": _cmd_show,
    }[args.cmd]
    if argv is not None:  # called from `afrd export`: afrd.cli prints AfrdError
        return handler(args)
    try:
        return handler(args)
    except AfrdError as exc:
        print(f"afrd-export {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
