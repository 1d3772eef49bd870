"""The ``afrd`` model kind: the paper's network (afrd.model.distill) as it is, trained by
distillation, scored by ``InferenceModel``. Checkpoints without a ``model_kind`` are this kind.

The smallest kind, and the template for a new one: the interface of afrd.model.kinds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from afrd.model.distill.loop import fit
from afrd.model.distill.network import AFRD
from afrd.model.inference import InferenceModel

NAME = "afrd"
ABOUT = "student trained by distillation (fusion, RD bottleneck, reversed decoder)"


def build(config: dict) -> AFRD:
    return AFRD.from_config(config)


def inference_module(model: nn.Module) -> nn.Module:
    return model if isinstance(model, InferenceModel) else InferenceModel(model)


def student(cfg, n_lights: int) -> AFRD:
    return AFRD(cfg.teacher, cfg.fusion, n_lights, cfg.image_size, cfg.teacher_weights)


def train(cfg, sets=None, norm_sets=None, **kw) -> Path:
    return fit(replace(cfg, model=NAME), student, sets, norm_sets, **kw)
