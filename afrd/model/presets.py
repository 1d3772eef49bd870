"""``afrd train --preset``: named training recipes, each a model kind and the options it sets.

Resolution order for every option: the trainer's own default, then the preset's value, then a
flag given on the command line (explicit flags always win; an explicit ``--epochs`` also drops
a preset's ``steps``, which would otherwise set the epochs). A preset may name any model kind
(``afrd``, ``memory``) with options in the trainer's field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from afrd.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    model: str  # model kind, e.g. "afrd"
    about: str
    options: Mapping[str, object] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "afrd",
        "the paper's AFRD: WideResNet-50-2 (ImageNet weights from a local file), attention "
        "fusion, eq. 5 loss, 256 px, AdamW 4e-4, batch 8, 100 epochs; for a GPU",
        {
            "teacher": "wide_resnet50_2",
            "fusion": "attention",
            "loss": "pixel",
            "image_size": 256,
            "lr": 4e-4,
            "batch_size": 8,
            "epochs": 100,
            "feature_cache": "auto",
        },
    ),
    # bench/fusion.py (BENCHMARKS.md): on a CPU the multi-light memory bank beats the AFRD
    # recipe below at every pose (mean I-AUROC over the four rendered categories) in a
    # fraction of the training time, so it is what a user without a GPU gets; looking at the
    # part at 256 and 128 px beats either size alone. Since issue 23 (bench/linespeed.py) the
    # bank searches the part's region in a capped coreset and the background in a small one of
    # its own: 64 sets built in 25 s on a busy 2-core box (bcc29de: 164 s), a part judged at
    # 1.17x the teacher's own cost (bcc29de: 2.76x), the same mean I-AUROC within 0.005.
    "cpu": Preset(
        "memory",
        "the multi-light memory bank (training-free): EfficientNet-Lite0 ImageNet features per "
        "light at 256 and 128 px, greedy coreset of the part's region (capped) and a small one "
        "of the background, per-light normalisation on held-out normals, max over lights and "
        "sizes, registration to the reference pose chosen from the data (auto)",
        {
            "teacher": "efficientnet_lite0",
            "image_size": 256,
            "memory_scales": (1, 2),
            "register": "auto",
        },
    ),
    # The learning curve (bench/learning_curve.py, BENCHMARKS.md): with cached teacher maps,
    # mean I-AUROC over the four rendered categories rises to 512 steps and is flat after
    # (0.69 at 64, 0.74 at 256, 0.755 at 512, 0.75 at 1024); 512 steps take 2-3 minutes per
    # category on one CPU thread. Steps, not epochs, so the budget holds for any number of sets.
    "afrd-cpu": Preset(
        "afrd",
        "AFRD at a CPU budget: EfficientNet-Lite0, attention fusion, 128 px, AdamW 2e-3, "
        "batch 8, 512 optimiser steps on cached teacher features",
        {
            "teacher": "efficientnet_lite0",
            "fusion": "attention",
            "loss": "pixel",
            "image_size": 128,
            "lr": 2e-3,
            "batch_size": 8,
            "steps": 512,
            "feature_cache": "auto",
        },
    ),
    # Issue 27 (bench/logical.py, BENCHMARKS.md): on the logical family (count, pairing and
    # layout defects no window shows) the cpu bank scores near chance; with the position and
    # histogram branches fused into its map (median/MAD on held-out normals, the branches held
    # a margin back), 0.93 / 0.84 logical I-AUROC at fixtured / conveyor (fresh seeds 10-12;
    # 0.88 / 0.88 on 7-9) at -0.002 / +0.000 structural (bench/fusion.py, seed 1) but -0.018 at
    # the free pose: for parts held in a pose, a preset of its own, not the cpu one. Branch
    # settings: globalstats.BranchSettings.
    "logical": Preset(
        "memory",
        "the cpu preset's bank plus global branches in the same graph: per-position Gaussians "
        "of the patch features and per-half counts of rare component prototypes, each "
        "normalised on held-out normals and fused with the bank's map by a maximum; for "
        "defects in the relations between far-apart components (count, pairing, layout)",
        {
            "teacher": "efficientnet_lite0",
            "image_size": 256,
            "memory_scales": (1, 2),
            "register": "auto",
            "memory_global": ("position", "histogram"),
        },
    ),
}


def get_preset(name: str | None) -> Preset | None:
    if name is None:
        return None
    if name not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]


def resolve(
    defaults: Mapping[str, object], preset: str | None, given: Mapping[str, object]
) -> dict:
    """``defaults`` updated by the preset's options, then by the ``given`` values not None."""
    p = get_preset(preset)
    out = dict(defaults)
    if p is not None:
        out.update(p.options)
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def option_help(key: str, default: object) -> str:
    """``(default X; cpu: Y; paper: Z)`` for one option, so --help shows every preset's value."""
    parts = [f"default {default}"]
    for name, p in PRESETS.items():
        if key in p.options:
            parts.append(f"{name}: {p.options[key]}")
    return "(" + "; ".join(parts) + ")"


def presets_help() -> str:
    """The preset table for the end of --help."""
    lines = ["presets (explicit flags win over a preset):"]
    for name, p in PRESETS.items():
        lines.append(f"  {name:<8} model {p.model}: {p.about}")
    return "\n".join(lines)
