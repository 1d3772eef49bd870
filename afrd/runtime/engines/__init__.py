"""Inference engines behind one interface, one module per backend, chosen by name.

``create_engine("onnxruntime", bundle, threads=2)``. ``ENGINES`` is the one registry: a kind
names its engine class and its options model, each as ``"module:Name"`` (relative to this
package when it starts with a dot) imported when first needed, so importing this package
imports no backend (the daemon needs neither torch nor TensorRT unless its config names them)
and the config reads each kind's options from its torch-free ``<kind>_options`` module. Adding
an engine is its two modules plus one line in ``ENGINES``; ``register_engine`` adds one from
outside the package (a plugin, a test).
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from afrd.errors import ConfigError
from afrd.runtime.bundle import Bundle
from afrd.runtime.engines.base import Engine
from afrd.runtime.engines.options import EngineOptions

# an engine class or options model, or "module:Name" naming it
Ref = type | str

# kind -> (engine class, options model)
ENGINES: dict[str, tuple[Ref, Ref]] = {
    "onnxruntime": (".onnxruntime:OnnxRuntimeEngine", ".onnxruntime_options:OnnxRuntimeOptions"),
    "tensorrt": (".tensorrt:TensorRTEngine", ".tensorrt_options:TensorRTOptions"),
    "pytorch": (".pytorch:PyTorchEngine", ".pytorch_options:PyTorchOptions"),
    "null": (".null:NullEngine", ".null_options:NullOptions"),
}
DEFAULT_ENGINE = "onnxruntime"  # a config's [engine] without a kind

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "EngineOptions",
    "create_engine",
    "engine_options",
    "register_engine",
]


def register_engine(
    kind: str, engine: type[Engine] | str, options: type[EngineOptions] | str
) -> None:
    """Add engine ``kind``: from now on a config may name it, with ``options`` validated by its
    model, and ``create_engine`` opens it. A kind already registered otherwise is refused."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", kind):
        raise ValueError(f"engine kind {kind!r}: expected lower-case letters, digits, - or _")
    if ENGINES.get(kind, (engine, options)) != (engine, options):
        raise ValueError(f"engine kind {kind!r} is already registered as {ENGINES[kind]}")
    ENGINES[kind] = (engine, options)


def _resolve(ref: Ref) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module, __name__), name)


def engine_options(kind: str) -> type[EngineOptions]:
    """The options model of a registered ``kind`` (KeyError otherwise); imports no backend."""
    return _resolve(ENGINES[kind][1])


def create_engine(kind: str, bundle: Bundle | str | os.PathLike, **opts: Any) -> Engine:
    """Open ``bundle`` (a Bundle or a path, verified on load) in the backend ``kind``."""
    if kind not in ENGINES:
        raise ConfigError(f"engine kind {kind!r} unknown; expected one of {sorted(ENGINES)}")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    return _resolve(ENGINES[kind][0])(bundle, **opts)
