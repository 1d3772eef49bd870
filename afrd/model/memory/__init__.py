"""The ``memory`` model kind: the training-free multi-light memory bank (afrd.model.memory.bank),
fitted from normal sets with a coreset per light (afrd.model.memory.fit); it is its own
inference module. ``afrd train --model memory`` (the ``cpu`` preset)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from afrd import cliargs
from afrd.model.memory.bank import KIND, MemoryBank
from afrd.model.memory.fit import train_memory

NAME = KIND
ABOUT = "training-free memory bank of the teacher's patch features per light"
TRAIN_OPTIONS = {
    "--memory-scales": {
        "type": cliargs.int_list,
        "metavar": "F,F",
        "help": "memory bank: input downsampling factors, a teacher pass and bank each (2 = half)",
    }
}
# Where neither a preset nor a flag sets them: the trainer's own defaults (WideResNet-50-2 at
# 256 px) make a bank too large to search on a CPU.
TRAIN_DEFAULTS = {"teacher": "efficientnet_lite0", "image_size": 128}


def build(config: dict) -> MemoryBank:
    return MemoryBank.from_config(config)


def inference_module(model: nn.Module) -> nn.Module:
    return model  # banks, normalisation, fusion and scoring are all inside


def train(cfg, sets=None, norm_sets=None, **kw) -> Path:
    return train_memory(cfg, sets, norm_sets, **kw)


def bundle_model(config: dict) -> dict:
    return {"memory": config["memory"]} if "memory" in config else {}


def score_rule(config: dict) -> str:
    return str((config.get("memory") or {}).get("score", "max")).replace("topk:", "mean of top ")
