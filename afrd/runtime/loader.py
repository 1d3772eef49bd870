"""What inference needs, loaded as one unit: verified bundle, warmed engine, threshold.

The daemon swaps a :class:`Runtime` as a whole on reload, so a part is always judged by the
engine and the threshold of one bundle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from afrd.errors import AfrdError, BundleError, ConfigError
from afrd.runtime.bundle import ONNX_FILE, Bundle
from afrd.runtime.bundle_products import product_thresholds
from afrd.runtime.bundle_variants import variant_thresholds
from afrd.runtime.engines import Engine, create_engine


@dataclass
class Runtime:
    engine: Engine
    threshold: float | None  # None only for a multi-class bundle whose products all have one
    model_name: str
    model_sha256: str
    lights: tuple[str, ...]
    # a multi-class bundle's own threshold per product (Bundle.product_thresholds)
    product_thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> dict[str, str]:
        """The ``model`` field of a result message."""
        return {"name": self.model_name, "sha256": self.model_sha256}

    def close(self) -> None:
        self.engine.close()


def source_graph(engine: Engine) -> str:
    """The bundle's ONNX file whose function ``engine`` computes: a TensorRT engine's is the
    file it was built from (its sidecar), ONNX Runtime's its ``onnx_file`` option; engines that
    run no bundle graph (pytorch, null) stand for model.onnx."""
    sidecar = getattr(engine, "sidecar", None)
    if isinstance(sidecar, dict) and sidecar.get("onnx_file"):
        return str(sidecar["onnx_file"])
    return str(getattr(engine, "onnx_file", ONNX_FILE))


def load_runtime(
    bundle_path: str | os.PathLike,
    engine: str,
    options: Mapping[str, Any] | None = None,
    threshold: float | None = None,
    on_status: Callable[[str], None] | None = None,
    check_lights: Callable[[tuple[str, ...]], object] | None = None,
    products: Sequence[str] = (),
) -> Runtime:
    """Verify the bundle, open its engine and warm it up. ``threshold`` overrides the bundle's
    calibrated one; ConfigError when neither exists, unless every one of ``products`` (the
    products this bundle is to judge) has its own threshold in a multi-class bundle. An engine
    running a precision variant (model.int8.onnx, or a TensorRT engine built from one) is
    judged by that variant's own thresholds, and refused (BundleError) when it has none.
    ``on_status`` hears what is being done (the daemon forwards it to systemd);
    ``check_lights`` sees the bundle's lights before the engine is opened (the daemon checks
    its config lights them all)."""
    bundle = Bundle.load(bundle_path)
    if check_lights is not None:
        check_lights(tuple(bundle.lights))
    if on_status is not None:
        on_status(f"loading engine {engine} for {bundle.name}")
    try:
        eng = create_engine(engine, bundle, **dict(options or {}))
    except AfrdError:
        raise
    except Exception as exc:  # a graph that does not load, an option of the wrong type
        raise BundleError(
            f"bundle {bundle_path}: engine {engine} cannot open it: {type(exc).__name__}: "
            f"{str(exc)[:300]}"
        ) from None
    try:
        threshold, own = _thresholds(bundle, engine, eng, threshold, products)
    except AfrdError:
        eng.close()
        raise
    try:
        eng.warmup()
    except Exception as exc:  # e.g. the graph's input size is not bundle.json's input.size
        eng.close()
        raise BundleError(
            f"bundle {bundle_path}: engine {engine} fails on an input of the bundle's "
            f"input.size {list(bundle.input_size)} and {len(bundle.lights)} lights: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    return Runtime(
        engine=eng,
        threshold=None if threshold is None else float(threshold),
        model_name=bundle.name,
        model_sha256=bundle.sha256,
        lights=tuple(bundle.lights),
        product_thresholds=own,
    )


def _thresholds(
    bundle: Bundle,
    engine: str,
    eng: Engine,
    threshold: float | None,
    products: Sequence[str],
) -> tuple[float | None, dict[str, float]]:
    """(threshold, own threshold per product) the opened engine's scores are judged by: the
    graph's (model.onnx's or the variant's own), ``threshold`` overriding the bundle-wide one."""
    graph = source_graph(eng)
    if graph == ONNX_FILE:
        calibrated, own = bundle.threshold, product_thresholds(bundle.meta)
        what, flag = f"bundle {bundle.path}", ""
    else:
        calibrated, own = variant_thresholds(bundle, graph, f" (run by engine {engine})")
        what, flag = f"bundle {bundle.path} variant {graph}", f" --variant {graph}"
        # a product with its own threshold for model.onnx must not fall back to the variant's
        # bundle-wide one: it was calibrated apart for a reason
        fp32_own = product_thresholds(bundle.meta)
        lacking = [p for p in products if p in fp32_own and p not in own]
        if lacking:
            raise BundleError(
                f"{what} has no threshold of its own for products {lacking} (model.onnx has): "
                f"run `afrd calibrate threshold {bundle.path}{flag} --product NAME --data ROOT`"
            )
    if threshold is None:
        threshold = calibrated
    missing = [p for p in products if p not in own]
    if threshold is None and (missing or not products):
        who = f" (products without their own: {missing})" if products else ""
        raise ConfigError(
            f"threshold: {what} has no calibrated threshold{who} and the config sets none "
            f"(run `afrd calibrate threshold{flag}` [--product NAME] or set threshold = <score>)"
        )
    return threshold, own
