"""Checkpoints carry their full config, so a file alone rebuilds the model (no weight files).

A checkpoint is a dict of plain values and tensors (config, state dict, optimizer state), saved
by ``torch.save`` and read with ``weights_only=True``: it names no class or module, so moving
code never breaks one. Its config's ``model_kind`` says which kind (afrd.model.kinds) rebuilds
the model.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch
from torch import nn

from afrd.data.register import Registration
from afrd.errors import ConfigError
from afrd.model import kinds

FORMAT = "afrd.checkpoint/1"
REQUIRED = ("lights", "image_size", "teacher", "teacher_weights_source", "fusion", "loss")


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: dict,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    history: list | None = None,
) -> Path:
    """Write model weights (teacher included), config, optimizer state and epoch atomically."""
    cfg = {**config, **model.config()}
    cfg["lights"] = list(cfg.get("lights") or [])
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise ConfigError(f"checkpoint config misses keys {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "config": cfg,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "history": list(history or []),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict (config, model, optimizer, epoch, history)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{path} is not a checkpoint (expected the model.pt or last.pt afrd train writes)"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch's message continues with advice about weights_only that does not apply here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"checkpoint {path} is unreadable: {first}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {path}: format is not {FORMAT}")
    return blob


def build_model(config: dict) -> nn.Module:
    """The model ``config`` describes (its kind's ``build``, afrd.model.kinds), random weights,
    shaped for the checkpoint's state (loaded afterwards)."""
    return kinds.get(kinds.name_of(config)).build(config)


def random_checkpoint(
    path: str | os.PathLike,
    teacher: str,
    fusion: str,
    lights: tuple[str, ...],
    size: int,
    seed: int = 0,
    data: str = "none: random weights, timing only",
) -> tuple[nn.Module, Path]:
    """An untrained AFRD (RANDOM teacher and student, seeded) saved as a real checkpoint, for
    timing and export tests where the weights' values do not matter. Returns (model, path)."""
    cfg = {
        "teacher": teacher,
        "fusion": fusion,
        "lights": list(lights),
        "image_size": size,
        "loss": "pixel",
        "epochs": 0,
        "seed": seed,
        "data": data,
    }
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    return model, save_checkpoint(path, model, cfg)


def registration_of(config: dict) -> Registration | None:
    """The registration a checkpoint's model was trained with (``config["registration"]``, the
    parameters and the reference image inline), or None: sets go in as they are."""
    rec = config.get("registration")
    return None if not rec else Registration.from_dict(rec)


def inference_module(model: nn.Module) -> nn.Module:
    """The uint8 [B, N, H, W, 3] -> (map [B, H, W], score [B]) module of a model from
    ``load_checkpoint`` (its kind's; an inference module comes back as it is)."""
    return kinds.of_model(model).inference_module(model)


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """(model in eval mode, built by the kind the config names; config with ``lights`` as a
    tuple)."""
    blob = read_checkpoint(path)
    cfg = dict(blob["config"])
    cfg["lights"] = tuple(cfg["lights"])
    try:
        kind = kinds.get(kinds.name_of(cfg))
    except ConfigError as e:
        raise ConfigError(f"checkpoint {path}: {e}") from None
    model = kind.build(cfg)
    # the part of the state the built model loads (DCAM's training-only blocks are not)
    model.load_state_dict(kind.inference_state(blob["model"]))
    model.teacher_weights_source = cfg["teacher_weights_source"]
    cfg.setdefault("epoch", blob.get("epoch", 0))
    return model.eval(), cfg
