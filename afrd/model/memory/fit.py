"""``afrd train --model memory``: build a memory bank from normal image sets, no optimiser.

Steps, per input scale: teacher patch features of every normal training set, per light; a
greedy k-center coreset of each light's patches (afrd.model.memory.coreset); the per-light
normalisation from held-out normal sets (the ``val`` split, as for AFRD's map statistics:
parts that are not in the bank, since a bank patch is its own nearest neighbour at distance 0). Writes
``<out>/model.pt`` in the checkpoint format ``afrd.model.checkpoint`` reads for every kind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from afrd.errors import ConfigError, DataError
from afrd.model.backbones import TEACHERS
from afrd.model.checkpoint import save_checkpoint
from afrd.model.memory.bank import MemoryBank
from afrd.model.memory.coreset import greedy_coreset
from afrd.model.sets import fit_sets_registration, normal_subset, open_sets, registered, resize_set

MIN_HELD_OUT = 4  # fewer held-out normals make a useless std


@dataclass
class MemoryOptions:
    """What the memory bank is built from (defaults: the measured best at 128 px, Lite0)."""

    layers: tuple[int, ...] = (0, 1)
    scales: tuple[int, ...] = (1,)  # input downsampling factors, one teacher pass each
    pool: int = 3
    stride: int = 8  # pixels between patches
    coreset: float = 0.1  # fraction of each light's training patches kept in its bank
    max_bank: int = 16384  # cap per light (ONNX constant size and search time)
    position: float = 0.0  # > 0: coordinates appended to features (fixtured/registered parts)
    fusion: str = "max"
    score: str = "max"
    sigma: float = 4.0
    batch_size: int = 8


def _batches(arrays: Sequence[np.ndarray], batch: int):
    for i in range(0, len(arrays), batch):
        yield torch.from_numpy(np.stack(arrays[i : i + batch]))


@torch.no_grad()
def _patches(
    model: MemoryBank, arrays: Sequence[np.ndarray], batch: int, head: int
) -> torch.Tensor:
    """[K sets, N, Q, dim] patch features at scale ``head`` of uint8 [N, H, W, 3] arrays."""
    return torch.cat([model.patches(x, head) for x in _batches(arrays, batch)])


@torch.no_grad()
def raw_maps(model: MemoryBank, arrays: Sequence[np.ndarray], batch: int = 8) -> list:
    """Per scale, per-light raw distance maps [K, N, grid, grid] of uint8 [N, H, W, 3] arrays."""
    per_batch = [model.raw_maps(x) for x in _batches(arrays, batch)]
    return [torch.cat(maps) for maps in zip(*per_batch, strict=True)]


def fit_bank(
    model: MemoryBank, arrays: Sequence[np.ndarray], opts: MemoryOptions, seed: int = 0
) -> list[dict]:
    """Fill ``model``'s per-light banks, at every scale, with coresets of the patches of
    ``arrays``."""
    info = []
    for i, head in enumerate(model.heads):
        feats = _patches(model, arrays, opts.batch_size, i)  # [K, N, Q, D]
        if model.position > 0:
            # coordinates in units of the features' spread, so ``position`` means the same for
            # every teacher and layer choice: 1.0 = crossing the part weighs like a typical
            # feature difference
            spread = float(feats[..., :-2].std(dim=(0, 2)).norm(dim=-1).mean())
            head.set_position_scale(model.position * spread)
            feats = _patches(model, arrays, opts.batch_size, i)
        per_light = feats.transpose(0, 1).flatten(1, 2)  # [N, K*Q, D]
        total = per_light.shape[1]
        k = max(1, min(opts.max_bank, int(round(opts.coreset * total))))
        picks = [greedy_coreset(per_light[j], k, seed) for j in range(model.n_lights)]
        head.set_bank(torch.stack([per_light[j, p] for j, p in enumerate(picks)]))
        info.append({"scale": head.factor, "patches_per_light": total, "bank_per_light": k})
    return info


def fit_normalisation(model: MemoryBank, arrays: Sequence[np.ndarray], batch: int = 8) -> list:
    """Per scale and light: mean and std of the maximum of the raw map over held-out normal
    sets."""
    if len(arrays) < MIN_HELD_OUT:
        raise DataError(
            f"memory normalisation needs at least {MIN_HELD_OUT} held-out normal sets, "
            f"got {len(arrays)}"
        )
    info = []
    for head, maps in zip(model.heads, raw_maps(model, arrays, batch), strict=True):
        peaks = maps.flatten(2).amax(2)  # [K, N]
        mean, std = peaks.mean(0), peaks.std(0)
        # a light whose maximum hardly moves must not turn small differences into huge z-scores
        std = std.clamp_min(max(float(std.median()) * 0.1, 1e-6))
        head.light_mean.copy_(mean)
        head.light_std.copy_(std)
        info.append({"scale": head.factor, "mean": mean.tolist(), "std": std.tolist()})
    return info


def _held_out(cfg, lights: tuple[str, ...]) -> tuple[list, str]:
    """Normal sets of ``cfg.norm_split`` (empty when the split is absent or off)."""
    if not cfg.norm_split or not cfg.data:
        return [], "none"
    try:
        sets = normal_subset(
            open_sets(cfg.data, cfg.norm_split, cfg.category, lights, cfg.image_size)
        )
    except DataError:
        return [], "none"
    return [sets[i] for i in range(len(sets))], f"split {cfg.norm_split!r} of {cfg.data}"


def _listed(sets) -> list:
    return [sets[i] for i in range(len(sets))]


def train_memory(
    cfg,
    sets: Sequence | None = None,
    norm_sets: Sequence | None = None,
    opts: MemoryOptions | None = None,
) -> Path:
    """Build the bank from ``cfg`` (an ``afrd.model.train.TrainConfig``: data, category, split,
    norm_split, teacher, teacher_weights, image_size, lights, max_sets, seed, out) and write
    ``<out>/model.pt``. ``sets``/``norm_sets`` replace reading the splits from disk."""
    opts = opts or MemoryOptions(scales=tuple(getattr(cfg, "memory_scales", (1,))))
    t0 = time.perf_counter()
    if cfg.teacher not in TEACHERS:
        raise ConfigError(f"--teacher must be one of {TEACHERS}, got {cfg.teacher!r}")
    if not 0 < opts.coreset <= 1:
        raise ConfigError(f"memory coreset fraction must be in (0, 1], got {opts.coreset}")
    torch.manual_seed(cfg.seed)
    if sets is None:
        if not cfg.data:
            raise ConfigError("train: --data DIR is required")
        sets = normal_subset(
            open_sets(cfg.data, cfg.split, cfg.category, cfg.lights, cfg.image_size)
        )
    n = len(sets) if cfg.max_sets is None else min(cfg.max_sets, len(sets))
    sets = [sets[i] for i in range(n)]
    sets = [s for s in sets if getattr(s, "label", 0) != 1]
    if not sets:
        raise DataError(f"no normal image sets in {cfg.data} (split {cfg.split}, {cfg.category})")
    lights = tuple(cfg.lights) if cfg.lights else tuple(sets[0].lights)
    # registered to the product's reference pose like AFRD's training sets (cfg.register)
    registration = fit_sets_registration(sets, lights, getattr(cfg, "register", "none"))
    sets = _listed(registered(sets, registration))
    source = "the normal sets given to train_memory()"
    if norm_sets is None:
        norm_sets, source = _held_out(cfg, lights)
    norm_sets = _listed(registered(norm_sets, registration))
    norm_sets = [s for s in norm_sets if getattr(s, "label", 0) != 1]
    arrays = [resize_set(s, cfg.image_size, lights) for s in sets]
    held = [resize_set(s, cfg.image_size, lights) for s in norm_sets]
    if len(held) < MIN_HELD_OUT:
        # no usable held-out split: keep a quarter of the training sets out of the bank
        cut = max(MIN_HELD_OUT, len(arrays) // 4)
        if len(arrays) - cut < 1:
            raise DataError(
                f"memory bank needs held-out normal sets: {len(held)} in {source} and only "
                f"{len(arrays)} training sets (need {MIN_HELD_OUT + 1} or a val split)"
            )
        print(
            f"afrd train: {len(held)} held-out normal sets in {source}; normalising on the "
            f"last {cut} of {len(arrays)} training sets instead (they stay out of the bank)",
            flush=True,
        )
        arrays, held = arrays[:-cut], arrays[-cut:]
        source = f"last {cut} sets of split {cfg.split!r}"
    model = MemoryBank(
        teacher=cfg.teacher,
        n_lights=len(lights),
        image_size=cfg.image_size,
        layers=opts.layers,
        pool=opts.pool,
        stride=opts.stride,
        position=opts.position,
        fusion=opts.fusion,
        score=opts.score,
        sigma=opts.sigma,
        teacher_weights=cfg.teacher_weights,
        scales=opts.scales,
    ).eval()
    bank_info = fit_bank(model, arrays, opts, cfg.seed)
    norm_info = {
        "source": source,
        "sets": len(held),
        "scales": fit_normalisation(model, held, opts.batch_size),
    }
    seconds = time.perf_counter() - t0
    config = {
        "data": str(cfg.data),
        "category": cfg.category,
        "split": cfg.split,
        "seed": cfg.seed,
        "lights": list(lights),
        "image_size": cfg.image_size,
        "epochs": 0,
        "loss": "none",
        "data_summary": {
            "path": str(cfg.data),
            "category": cfg.category,
            "split": cfg.split,
            "sets": len(arrays),
        },
        "memory_fit": {"coreset": opts.coreset, "max_bank": opts.max_bank, "scales": bank_info},
        "light_norm": norm_info,
        "train_seconds": round(seconds, 2),
        "registration": registration.to_dict() if registration else None,
    }
    path = save_checkpoint(Path(cfg.out) / "model.pt", model, config)
    banks = " + ".join(f"{b['bank_per_light']} (1/{b['scale']})" for b in bank_info)
    print(
        f"afrd train: memory bank of {banks} patches x {len(lights)} lights from "
        f"{len(arrays)} sets in {seconds:.1f} s",
        flush=True,
    )
    return path
