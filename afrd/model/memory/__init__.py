"""The ``memory`` model kind: the training-free multi-light memory bank (afrd.model.memory.bank),
fitted from normal sets with a coreset per light (afrd.model.memory.fit); it is its own
inference module. ``afrd train --model memory`` (the ``cpu`` preset). With global branches
(``--memory-global``, the ``logical`` preset) it is ``afrd.model.memory.branches``'s
``BankWithBranches``: the same bank with per-position and per-half component statistics fused
into its map, in the same graph."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from afrd import cliargs
from afrd.errors import ConfigError
from afrd.model.memory.bank import KIND, MemoryBank
from afrd.model.memory.branches import BankWithBranches, parse_branches
from afrd.model.memory.fit import train_memory

NAME = KIND


def _branches_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_branches(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


ABOUT = "training-free memory bank of the teacher's patch features per light"
TRAIN_OPTIONS = {
    "--memory-scales": {
        "type": cliargs.int_list,
        "metavar": "F,F",
        "help": "memory bank: input downsampling factors, a teacher pass and bank each (2 = half)",
    },
    "--memory-global": {
        "type": _branches_arg,
        "metavar": "B,B",
        "help": "memory bank: global branches fused into its map by a maximum, each normalised "
        "on the held-out normals: position (per-position Gaussians of the patch features) "
        "and/or histogram (per-half counts of rare component prototypes); they see defects "
        "that lie in relations between far-apart components",
    },
}
# Where neither a preset nor a flag sets them: the trainer's own defaults (WideResNet-50-2 at
# 256 px) make a bank too large to search on a CPU.
TRAIN_DEFAULTS = {"teacher": "efficientnet_lite0", "image_size": 128}


def build(config: dict) -> MemoryBank:
    if config.get("global"):
        return BankWithBranches.from_config(config)
    return MemoryBank.from_config(config)


def inference_module(model: nn.Module) -> nn.Module:
    return model  # banks, normalisation, fusion and scoring are all inside


def train(cfg, sets=None, norm_sets=None, **kw) -> Path:
    return train_memory(cfg, sets, norm_sets, **kw)


def bundle_model(config: dict) -> dict:
    """The bank's settings, its global branches and the preset it was trained with."""
    keys = ("memory", "global", "preset")
    return {k: config[k] for k in keys if config.get(k) is not None}


def score_rule(config: dict) -> str:
    rule = str((config.get("memory") or {}).get("score", "max")).replace("topk:", "mean of top ")
    if config.get("global"):
        branches = " and ".join(config["global"]["branches"])
        rule += f" (bank and {branches} maps normalised on held-out normals, fused by max)"
    return rule
