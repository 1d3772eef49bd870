"""The ``cad`` model kind: CAD's local + global students (afrd.model.cad.network), scored by
both students' z-scored maps combined (afrd.model.cad.inference). ``afrd train --model cad``,
or as before ``--student local+global``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from afrd.errors import ConfigError
from afrd.model.cad.inference import CADInference
from afrd.model.cad.network import CAD, KIND, STUDENTS
from afrd.model.distill.loop import fit

NAME = KIND
ABOUT = "AFRD's student plus a global student (GCCB, contextual affinity loss): logical defects"
TRAIN_OPTIONS = {
    "--student": {
        "choices": STUDENTS,
        "default": "local",
        "help": "local: AFRD's student; local+global: CAD, a global student (GCCB on the "
        "teacher's high-level map, contextual affinity loss) beside it (logical defects; "
        "the same as --model cad)",
    }
}


def selected_by(cfg) -> bool:
    student = getattr(cfg, "student", "local")
    if student not in STUDENTS:
        raise ConfigError(f"--student must be one of {' | '.join(STUDENTS)}, got {student!r}")
    return student == "local+global"


def build(config: dict) -> CAD:
    return CAD.from_config(config)


def inference_module(model: nn.Module) -> nn.Module:
    return model if isinstance(model, CADInference) else CADInference(model)


def student(cfg, n_lights: int) -> CAD:
    opts = (getattr(cfg, "extra", None) or {}).get("cad", {})  # CAD's own options (benchmarks)
    return CAD(cfg.teacher, cfg.fusion, n_lights, cfg.image_size, cfg.teacher_weights, **opts)


def train(cfg, sets=None, norm_sets=None, **kw) -> Path:
    return fit(replace(cfg, model=NAME), student, sets, norm_sets, **kw)
