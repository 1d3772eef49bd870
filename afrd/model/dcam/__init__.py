"""The ``dcam`` model kind: one student for several products (``--multi-class``) trained with
DCAM's attention blocks and losses (afrd.model.dcam.network). The blocks are training-only:
loading for inference or export drops them, so the model that runs is AFRD's network.
``afrd train --model dcam``, or as before ``--dcam``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from afrd.model.dcam.network import KIND, PREFIX, DCAMStudent
from afrd.model.distill.loop import fit
from afrd.model.distill.network import AFRD
from afrd.model.inference import InferenceModel

NAME = KIND
ABOUT = "AFRD's student trained with DCAM's attention blocks (training only): several products"
TRAIN_OPTIONS = {
    "--dcam": {
        "action": "store_true",
        "help": "DCAM attention blocks in training (the same as --model dcam)",
    }
}


def selected_by(cfg) -> bool:
    return getattr(cfg, "dcam", False) is True


def build(config: dict) -> AFRD:
    return AFRD.from_config(config)  # the blocks are not loaded (inference_state)


def inference_state(state: dict) -> dict:
    """A checkpoint's state without the DCAM blocks: what inference and export load."""
    return {k: v for k, v in state.items() if not k.startswith(PREFIX)}


def inference_module(model: nn.Module) -> nn.Module:
    return model if isinstance(model, InferenceModel) else InferenceModel(model)


def student(cfg, n_lights: int) -> DCAMStudent:
    opts = (getattr(cfg, "extra", None) or {}).get("dcam", {})  # DCAM's options (benchmarks)
    t, f, size, w = cfg.teacher, cfg.fusion, cfg.image_size, cfg.teacher_weights
    return DCAMStudent(t, f, n_lights, size, w, **opts)


def train(cfg, sets=None, norm_sets=None, **kw) -> Path:
    return fit(replace(cfg, model=NAME), student, sets, norm_sets, **kw)
