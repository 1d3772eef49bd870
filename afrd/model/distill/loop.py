"""The distillation kinds' training: fit a student (fusion, bottleneck, decoder and what a kind
adds) on normal image sets; each kind passes the function that builds its student.

Checkpoints go to ``<out>/last.pt`` after every epoch (with optimizer state, for ``--resume``)
and ``<out>/model.pt`` at the end (what export and eval read). Both carry the full config.
Before ``model.pt`` is written, the per-pixel map statistics (afrd.model.mapnorm) are fitted on
the normal sets of the ``val`` split (parts the student never trained on), when there are any.
The frozen teacher's maps of the training sets are computed once and reused every epoch
(afrd.model.distill.feature_cache).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from afrd.errors import ConfigError, DataError
from afrd.model.backbones import TEACHERS
from afrd.model.checkpoint import read_checkpoint, save_checkpoint
from afrd.model.distill.feature_cache import MODES, training_batches
from afrd.model.distill.network import AFRD
from afrd.model.heldout import fit_map_stats_or_warn, held_out_normals, open_normals
from afrd.model.scoring import LOSSES
from afrd.model.sets import SetDataset, fit_sets_registration, registered

# Config keys that must match when resuming (the rest, e.g. epochs, may change).
_RESUME_KEYS = ("teacher", "fusion", "loss", "image_size", "lights", "seed", "student")

Build = Callable[[object, int], AFRD]  # (TrainConfig, number of lights) -> the student


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check(cfg) -> None:
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
    if cfg.loss not in LOSSES:
        raise ConfigError(f"--loss must be one of {LOSSES}, got {cfg.loss!r}")
    if cfg.steps is not None and cfg.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {cfg.steps}")
    for key in ("epochs", "batch_size", "image_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")


def fit(
    cfg,
    build: Build,
    sets: Sequence | None = None,
    norm_sets: Sequence | None = None,
    on_epoch: Callable[[int, AFRD], None] | None = None,
) -> Path:
    """Train the student ``build(cfg, n_lights)`` makes and return ``<out>/model.pt``.

    ``cfg`` is an ``afrd.model.train.TrainConfig`` whose ``model`` names the kind. ``sets`` (a
    sequence of ImageSets) replaces reading ``cfg.data`` from disk, ``norm_sets`` replaces
    reading ``cfg.norm_split`` for the map statistics. ``on_epoch(epoch, model)`` runs after
    every epoch's checkpoint (learning curves); it must leave the model as it found it.
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
    model = build(cfg, len(lights))
    model.to(device)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    skip = ("resume", "progress", "lights", "model")
    config = {
        **{k: v for k, v in asdict(cfg).items() if k not in skip},
        "model_kind": cfg.model,
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
                loss = model.loss(per_light, cfg.loss)
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
