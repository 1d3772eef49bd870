"""The model kinds: one line each, name -> the module that is the kind.

A kind's module is imported on first use (``get``), so what only names kinds (presets, the
layout test, ``--help`` of torch-free commands) stays torch-free. Everything that depends on
the kind (checkpoint loading, ``afrd train --model``, export, eval, the demo) asks this
registry; no other module names a kind. A new kind is one folder ``afrd/model/<kind>/`` whose
``__init__.py`` provides the interface below, plus one line in ``KINDS`` (or, for a kind that
lives outside afrd, one ``register()`` call before it is used).

A kind module provides:

- ``ABOUT: str``: one line for ``afrd train --help``.
- ``build(config) -> nn.Module``: the model a checkpoint config describes, shaped for its state
  (random weights; ``load_checkpoint`` loads the state into it). The model has ``n_lights`` and
  a ``config()`` (its constructor arguments, ``model_kind`` among them, as checkpoints store
  them); a ``kind`` attribute names its kind where it is not the default.
- ``inference_module(model) -> nn.Module``: uint8 [B, N, H, W, 3] -> (map float32 [B, H, W],
  score float32 [B]), what export, eval and the PyTorch engine run; given its own inference
  module it returns it unchanged.
- ``train(cfg, sets=None, norm_sets=None, **kw) -> Path``: fit from an
  ``afrd.model.train.TrainConfig`` (``sets``/``norm_sets`` replace reading its splits) and
  write ``<cfg.out>/model.pt`` with ``afrd.model.checkpoint.save_checkpoint``.

and may provide:

- ``TRAIN_OPTIONS: dict[str, dict]``: its own ``afrd train`` flags (flag -> argparse keywords);
  a value given for a run of another kind is refused. A flag whose dest is a TrainConfig field
  fills it, any other lands in ``cfg.extra[<kind>]``.
- ``TRAIN_DEFAULTS: dict``: its own defaults for options a preset may set (a preset and flags
  still win).
- ``selected_by(cfg) -> bool``: a TrainConfig (or the parsed flags) asks for the kind without
  naming it (the flags it had before kinds were named).
- ``inference_state(state) -> dict``: the part of a checkpoint's state ``build``'s model loads
  (default: all of it).
- ``bundle_model(config) -> dict``: keys of its own for bundle.json's ``model`` section.
- ``score_rule(config) -> str``: how the score comes from the map (default ``max``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from afrd.errors import ConfigError

KINDS: dict[str, str | ModuleType | Any] = {
    "afrd": "afrd.model.afrd",
    "memory": "afrd.model.memory",
    "cad": "afrd.model.cad",
    "dcam": "afrd.model.dcam",
}
# The kind of a checkpoint without ``model_kind`` and of ``afrd train`` without --model/preset.
DEFAULT = "afrd"


def register(name: str, module: str | ModuleType | Any) -> None:
    """Add a kind that lives outside afrd: a module path (imported on first use) or an object
    with the interface above."""
    if not name or name in KINDS:
        raise ConfigError(f"model kind {name!r} is empty or already registered")
    KINDS[name] = module


def names() -> tuple[str, ...]:
    return tuple(KINDS)


@dataclass(frozen=True)
class Kind:
    """One kind's interface, the optional parts filled with their defaults."""

    name: str
    module: Any

    @property
    def about(self) -> str:
        return str(getattr(self.module, "ABOUT", ""))

    @property
    def train_options(self) -> dict[str, dict]:
        return dict(getattr(self.module, "TRAIN_OPTIONS", {}))

    @property
    def train_defaults(self) -> dict:
        return dict(getattr(self.module, "TRAIN_DEFAULTS", {}))

    def build(self, config: dict) -> Any:
        return self.module.build(config)

    def inference_module(self, model: Any) -> Any:
        return self.module.inference_module(model)

    def train(self, cfg: Any, sets: Any = None, norm_sets: Any = None, **kw: Any) -> Any:
        return self.module.train(cfg, sets, norm_sets, **kw)

    def selected_by(self, cfg: Any) -> bool:
        hook = getattr(self.module, "selected_by", None)
        return bool(hook(cfg)) if hook is not None else False

    def inference_state(self, state: dict) -> dict:
        hook = getattr(self.module, "inference_state", None)
        return hook(state) if hook is not None else state

    def bundle_model(self, config: dict) -> dict:
        hook = getattr(self.module, "bundle_model", None)
        return dict(hook(config)) if hook is not None else {}

    def score_rule(self, config: dict) -> str:
        hook = getattr(self.module, "score_rule", None)
        return str(hook(config)) if hook is not None else "max"


def get(name: str) -> Kind:
    """The registered kind ``name`` (its module imported now)."""
    if name not in KINDS:
        raise ConfigError(
            f"model kind {name!r} is not registered (known: {', '.join(KINDS)}); a kind outside "
            "afrd registers with afrd.model.kinds.register"
        )
    ref = KINDS[name]
    return Kind(name, importlib.import_module(ref) if isinstance(ref, str) else ref)


def name_of(config: dict) -> str:
    """The kind a checkpoint config names (``model_kind``). A checkpoint written before its kind
    was recorded carries the kind's options under the kind's name (DCAM's ``dcam`` section);
    without either it is the default kind."""
    kind = config.get("model_kind")
    if kind:
        return str(kind)
    sections = [k for k in KINDS if k != DEFAULT and isinstance(config.get(k), dict)]
    return sections[0] if len(sections) == 1 else DEFAULT


def of_model(model: Any) -> Kind:
    """The kind of a built model or its inference module (its ``kind`` attribute)."""
    return get(getattr(model, "kind", DEFAULT))
