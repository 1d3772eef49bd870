"""A bundle's precision variants (``model.fp16.onnx``, ``model.int8.onnx``): checked, each with
its own threshold.

A variant computes approximately what ``model.onnx`` computes, on another scale of scores, so
it is trusted only once ``afrd-export`` has run it against ``model.onnx`` on held-out image sets
and calibrated a threshold from its own scores (``afrd.export.variant_check``). bundle.json
keeps that as::

    "variants": {"model.int8.onnx": {"precision": "int8-qdq", "onnx_sha256": "<hex>",
                 "parity": {...}, "threshold": {"value": <number>, "statistics": {...}, ...},
                 "products": {"<product>": {"threshold": {...}}}}}

(``products`` only in a multi-class bundle, as afrd.runtime.bundle_products). A variant file
with no record, or whose sha256 is not the one checked (re-made since), is refused by whatever
loads it (:func:`variant_thresholds`), naming the file and the command that checks it.
Torch-free, and free of ``afrd.runtime.bundle`` (which imports this module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from afrd.errors import BundleError
from afrd.runtime.bundle_products import check_product

ONNX_FILE = "model.onnx"
VARIANT_ROLE = "onnx-variant"


def check_command(bundle: Any, onnx_file: str) -> str:
    """The command that parity-checks ``onnx_file`` and calibrates its threshold."""
    return f"afrd-export check {bundle.path} {onnx_file} [--data ROOT]"


def variant_files(meta: dict) -> list[str]:
    """The precision variants listed in ``files`` (as written by afrd.export.precision)."""
    return [
        name
        for name, rec in (meta.get("files") or {}).items()
        if name != ONNX_FILE and name.endswith(".onnx") and rec.get("role") == VARIANT_ROLE
    ]


def checked_record(bundle: Any, onnx_file: str) -> dict | None:
    """``onnx_file``'s variant record when it was checked as the file now is, else None."""
    rec = (bundle.meta.get("variants") or {}).get(onnx_file)
    file_rec = (bundle.meta.get("files") or {}).get(onnx_file) or {}
    if not isinstance(rec, dict) or rec.get("onnx_sha256") != file_rec.get("sha256"):
        return None
    return rec


def require_checked(bundle: Any, onnx_file: str, who: str = "") -> dict:
    """The variant's record, or BundleError naming the variant (``who``: who wants it, e.g.
    " (run by engine onnxruntime)") and what to run."""
    if onnx_file not in (bundle.meta.get("files") or {}):
        raise BundleError(f"bundle {bundle.path}: no file {onnx_file} in bundle.json")
    rec = checked_record(bundle, onnx_file)
    if rec is None:
        listed = (bundle.meta.get("variants") or {}).get(onnx_file)
        why = (
            "was re-made since its parity check and threshold were taken"
            if listed
            else "has no parity check against model.onnx and no threshold of its own"
        )
        raise BundleError(
            f"bundle {bundle.path}: precision variant {onnx_file}{who} {why} (model.onnx's "
            f"threshold does not fit its scores); run `{check_command(bundle, onnx_file)}`"
        )
    return rec


def variant_thresholds(
    bundle: Any, onnx_file: str, who: str = ""
) -> tuple[float | None, dict[str, float]]:
    """(threshold, {product: threshold}) of a checked variant: what the runtime judges its
    scores by, in place of the bundle's own. BundleError when the variant is unchecked."""
    rec = require_checked(bundle, onnx_file, who)
    value = (rec.get("threshold") or {}).get("value")
    own = {}
    for name, prod in (rec.get("products") or {}).items():
        v = (prod.get("threshold") or {}).get("value")
        if v is not None:
            own[name] = float(v)
    return (None if value is None else float(value)), own


def threshold_slot(bundle: Any, product: str | None, variant: str | None) -> tuple[dict, str]:
    """The dict whose ``threshold`` a calibration sets, and how messages name it: the bundle,
    a product of a multi-class bundle, a checked variant, or a product of a variant."""
    where = f"bundle {bundle.path}"
    meta = bundle.meta
    if product is not None:
        check_product(meta, where, product)
    if variant is None or variant == ONNX_FILE:
        slot = meta if product is None else meta["products"][product]
    else:
        slot = require_checked(bundle, variant)
        where += f": variant {variant}"
        if product is not None:
            slot = slot.setdefault("products", {}).setdefault(product, {})
    if product is not None:
        where += f": product {product!r}"
    return slot, where


def record_variant(bundle: Any, onnx_file: str, parity: dict, threshold: dict) -> None:
    """Store a passed check of ``onnx_file`` (replacing an earlier one) and save bundle.json."""
    file_rec = bundle.meta["files"][onnx_file]
    bundle.meta.setdefault("variants", {})[onnx_file] = {
        "precision": file_rec.get("precision"),
        "onnx_sha256": file_rec["sha256"],
        "parity": parity,
        "threshold": threshold,
    }
    bundle.save()


def forget_variant(bundle: Any, onnx_file: str, remove_file: bool) -> None:
    """Drop ``onnx_file``'s check (it failed); with ``remove_file`` the file too (just made)."""
    (bundle.meta.get("variants") or {}).pop(onnx_file, None)
    if remove_file:
        bundle.meta["files"].pop(onnx_file, None)
        (bundle.path / onnx_file).unlink(missing_ok=True)
    bundle.save()


def check_variants(where: str, meta: dict, check_threshold: Callable[[Any, str], float]) -> None:
    """BundleError naming the field when ``variants`` is not the shape above."""
    variants = meta.get("variants")
    if variants is None:
        return
    if not isinstance(variants, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in variants.items()
    ):
        raise BundleError(
            f"{where}: field 'variants' is {str(variants)[:80]!r}, expected "
            '{"<file>.onnx": {"onnx_sha256": ..., "parity": {...}, "threshold": {...}}, ...}'
        )
    for name, rec in variants.items():
        thr = rec.get("threshold")
        if thr is not None and not isinstance(thr, dict):
            raise BundleError(f"{where}: field 'variants.{name}.threshold' is not an object")
        if thr and thr.get("value") is not None:
            check_threshold(thr["value"], f"{where}: field 'variants.{name}.threshold.value'")
        products = rec.get("products") or {}
        if not isinstance(products, dict):
            raise BundleError(f"{where}: field 'variants.{name}.products' is not an object")
        for p, prec in products.items():
            v = ((prec or {}).get("threshold") or {}).get("value")
            if v is not None:
                check_threshold(v, f"{where}: field 'variants.{name}.products.{p}.threshold.value'")
