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
from afrd.runtime.bundle import Bundle
from afrd.runtime.bundle_products import product_thresholds
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
    products this bundle is to judge) has its own threshold in a multi-class bundle.
    ``on_status`` hears what is being done (the daemon forwards it to systemd);
    ``check_lights`` sees the bundle's lights before the engine is opened (the daemon checks
    its config lights them all)."""
    bundle = Bundle.load(bundle_path)
    if check_lights is not None:
        check_lights(tuple(bundle.lights))
    own = product_thresholds(bundle.meta)
    if threshold is None:
        threshold = bundle.threshold
    missing = [p for p in products if p not in own]
    if threshold is None and (missing or not products):
        who = f" (products without their own: {missing})" if products else ""
        raise ConfigError(
            f"threshold: bundle {bundle_path} has no calibrated threshold{who} and the config "
            f"sets none (run `afrd calibrate threshold` [--product NAME] or set threshold = "
            f"<score>)"
        )
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
