"""Inference engines behind one interface, one module per backend, chosen by name.

``create_engine("onnxruntime", bundle, threads=2)``. Importing this package imports no backend:
each backend module is imported when asked for, so the daemon needs neither torch nor TensorRT
unless its config names them.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from afrd.errors import ConfigError
from afrd.runtime.bundle import Bundle
from afrd.runtime.engines.base import Engine

# kind -> (module, class name)
ENGINES: dict[str, tuple[str, str]] = {
    "onnxruntime": ("afrd.runtime.engines.onnxruntime", "OnnxRuntimeEngine"),
    "tensorrt": ("afrd.runtime.engines.tensorrt", "TensorRTEngine"),
    "pytorch": ("afrd.runtime.engines.pytorch", "PyTorchEngine"),
    "null": ("afrd.runtime.engines.null", "NullEngine"),
}

__all__ = ["ENGINES", "Engine", "create_engine"]


def create_engine(kind: str, bundle: Bundle | str | os.PathLike, **opts: Any) -> Engine:
    """Open ``bundle`` (a Bundle or a path, verified on load) in the backend ``kind``."""
    if kind not in ENGINES:
        raise ConfigError(f"engine kind {kind!r} unknown; expected one of {sorted(ENGINES)}")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    module_name, cls_name = ENGINES[kind]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(bundle, **opts)
