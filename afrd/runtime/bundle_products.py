"""A multi-class bundle's products (``afrd train --multi-class``): one threshold each.

``bundle.json`` lists them as ``"products": {"<product>": {"threshold": {"value": <number or
null>, "source": ..., "set": ..., "statistics": {...}}}}``; the top-level ``threshold`` stays
the bundle's threshold for every product without its own. A bundle without ``products`` is
read exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from afrd.errors import BundleError

NO_THRESHOLD = {"value": None, "source": "none", "statistics": {}}


def product_thresholds(meta: dict) -> dict[str, float]:
    """Each listed product's own calibrated threshold, where it has one."""
    out = {}
    for name, rec in (meta.get("products") or {}).items():
        value = (rec.get("threshold") or {}).get("value")
        if value is not None:
            out[name] = float(value)
    return out


def check_products(where: str, meta: dict, check_threshold: Any) -> None:
    """BundleError naming the field when ``products`` is not the shape above."""
    products = meta.get("products")
    if products is None:
        return
    if not isinstance(products, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in products.items()
    ):
        raise BundleError(
            f"{where}: field 'products' is {str(products)[:80]!r}, expected "
            '{"<product>": {"threshold": {"value": <number or null>}}, ...}'
        )
    for name, rec in products.items():
        value = (rec.get("threshold") or {}).get("value")
        if value is not None:
            check_threshold(value, f"{where}: field 'products.{name}.threshold.value'")


def check_product(meta: dict, where: str, product: str) -> None:
    """BundleError unless the multi-class bundle ``meta`` lists ``product``."""
    listed = list(meta.get("products") or {})
    if product not in listed:
        what = f"it lists {listed}" if listed else "it is not a multi-class bundle"
        raise BundleError(f"{where}: no product {product!r} ({what})")


def new_products(names: Sequence[str]) -> dict:
    """The ``products`` field of a new bundle: every product, no threshold yet."""
    return {str(p): {"threshold": dict(NO_THRESHOLD)} for p in names}


def threshold_for(bundle: Any, product: str | None) -> float | None:
    """``product``'s own threshold in a multi-class bundle, else the bundle's threshold."""
    own = product_thresholds(bundle.meta)
    return own.get(product, bundle.threshold) if product else bundle.threshold
