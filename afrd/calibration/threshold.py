"""`afrd calibrate threshold BUNDLE --data DIR [--frr 0.01]`: the verdict threshold from data.

Scores held-out normal image sets with the bundle's own graph (ONNX Runtime), picks the
threshold so that at most the target fraction of normal parts would be rejected
(verdict = score > threshold), reports the false-accept rate on defective sets where the data
has labelled ones, and stores threshold + the score statistics in bundle.json (atomic rewrite;
the ONNX file and its sha256 are untouched). Each checked precision variant (model.int8.onnx,
..) gets its own threshold the same way from its own scores (afrd.runtime.bundle_variants).

The numbers (threshold at the FRR, expected FRR and its 95% upper bound, the warning when
n x FRR < 5) are afrd.runtime.threshold_stats's, shared with the precision variants' check.
Torch-free.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from afrd import cliargs
from afrd.errors import ConfigError
from afrd.runtime.bundle import ONNX_FILE, Bundle
from afrd.runtime.bundle_products import check_product
from afrd.runtime.bundle_variants import (
    check_command,
    checked_record,
    threshold_slot,
    variant_files,
)
from afrd.runtime.threshold_stats import calibration_statistics, print_report, score_sets


def calibrate(
    bundle: Bundle,
    sets: Iterable[Any],
    frr: float = 0.01,
    engine: Any = None,
    source: dict | None = None,
    write: bool = True,
    product: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Score ``sets`` (ImageSets; label 0/None = normal, 1 = defective), set the threshold at the
    target false-reject rate, store it in ``bundle`` (unless ``write=False``): the bundle's
    threshold, ``product``'s own in a multi-class bundle, and/or the checked precision
    ``variant``'s own (scored with that graph). Returns the stats."""
    if not 0.0 <= frr < 1.0:
        raise ConfigError(f"--frr must be in [0, 1), got {frr}")
    threshold_slot(bundle, product, variant)  # refuse an unknown product or variant up front
    graph = variant or ONNX_FILE
    own = engine is None
    if own:
        from afrd.runtime.engines import create_engine

        engine = create_engine("onnxruntime", bundle, device="cpu", onnx_file=graph)
    try:
        scores, labels = score_sets(engine, sets)
    finally:
        if own:
            engine.close()
    thr, stats = calibration_statistics(bundle, engine, graph, scores, labels, frr, source)
    if write:
        bundle.set_threshold(thr, stats, "afrd calibrate threshold", product, variant)
    return {"threshold": thr, **stats}


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser(
        "afrd calibrate threshold",
        "Set a bundle's threshold from held-out normal image sets at a target FRR: model.onnx's "
        "and each checked precision variant's own, each from its own scores.",
    )
    p.add_argument("bundle", type=Path)
    cliargs.add_dataset_args(p, category_help="category of --data (one)")
    p.add_argument(
        "--split",
        action="append",
        help="split(s) to score (repeatable; default: val). Labelled defective sets "
        "count for the false-accept rate, the rest as normal.",
    )
    p.add_argument("--frr", type=float, default=0.01, help="target false-reject rate")
    p.add_argument(
        "--product",
        help="multi-class bundle: store the threshold as this product's own (default: the "
        "bundle's threshold, for every product without its own)",
    )
    p.add_argument(
        "--variant",
        action="append",
        metavar="FILE",
        help="calibrate only this graph (repeatable: model.onnx, model.int8.onnx, ..; default: "
        "model.onnx and every checked precision variant)",
    )
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")
    p.add_argument("--dry-run", action="store_true", help="print, do not write bundle.json")
    return p


def _graphs(bundle: Bundle, chosen: list[str] | None) -> list[str]:
    """The ONNX files to calibrate; a note for each variant left out because it is unchecked."""
    if chosen:
        for f in chosen:
            if f != ONNX_FILE:
                threshold_slot(bundle, None, f)  # BundleError: not a checked variant
        return list(dict.fromkeys(chosen))
    graphs = [ONNX_FILE]
    for f in variant_files(bundle.meta):
        if checked_record(bundle, f) is not None:
            graphs.append(f)
        else:
            print(f"note: {f} is not checked, so not calibrated: run `{check_command(bundle, f)}`")
    return graphs


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    if not 0.0 <= a.frr < 1.0:
        raise ConfigError(f"--frr must be in [0, 1), got {a.frr}")
    data = Path(a.data)
    if not data.is_dir():
        raise ConfigError(f"--data {data} is not a directory")
    category = cliargs.one_category(a.category)
    bundle = Bundle.load(a.bundle)
    if a.product is not None:
        check_product(bundle.meta, f"bundle {bundle.path}", a.product)
    graphs = _graphs(bundle, a.variant)
    from afrd.data.datasets import open_dataset
    from afrd.runtime.engines import create_engine

    splits = a.split or ["val"]
    datasets = [open_dataset(data, s, category=category, lights=bundle.lights) for s in splits]

    def iterate() -> Iterable[Any]:
        for ds in datasets:
            for i in range(len(ds)):
                yield ds[i]

    source = {"path": str(os.path.abspath(data)), "splits": splits, "category": category}
    total = sum(len(ds) for ds in datasets)
    for graph in graphs:
        sets = cliargs.progress(iterate(), f"scoring ({graph})", total=total)
        engine = create_engine(
            "onnxruntime", bundle, device="cpu", threads=a.threads, onnx_file=graph
        )
        variant = None if graph == ONNX_FILE else graph
        try:
            r = calibrate(bundle, sets, a.frr, engine, source, not a.dry_run, a.product, variant)
        finally:
            engine.close()
        print_report(r, graph)
    where = f"product {a.product!r} of " if a.product else ""
    print(
        "dry run: bundle.json unchanged"
        if a.dry_run
        else f"stored in {where}{bundle.path}/bundle.json"
    )
    return 0
