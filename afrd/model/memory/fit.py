"""``afrd train --model memory``: build a memory bank from normal image sets, no optimiser.

Steps, per input scale: teacher patch features of every normal training set, per light
(through ONNX Runtime: afrd.model.memory.extract); the part's region (afrd.model.memory.region);
a greedy k-center coreset of each light's patches in the region, capped so that the bank and
the search stay the same size however many sets there are, and a small one of the patches
outside it (afrd.model.memory.coreset); the per-light normalisation from held-out normal sets
(the ``val`` split, as for AFRD's map statistics: parts that are not in the bank, since a bank
patch is its own nearest neighbour at distance 0). Writes ``<out>/model.pt`` in the checkpoint
format ``afrd.model.checkpoint`` reads for every kind.
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
from afrd.model.memory.branches import BankWithBranches, fit_branches, parse_branches
from afrd.model.memory.coreset import greedy_coreset
from afrd.model.memory.extract import Features, eager_features, onnx_features
from afrd.model.memory.region import part_mask, patch_region
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
    # cap per light at the finest scale, a coarser one f^2 fewer: the search costs the same
    # from 40 sets or 200 (issue 23; 16384 everywhere before, i.e. no cap at 64 sets)
    max_bank: int = 3072
    # the part's region (afrd.model.memory.region): patches outside it get a background bank
    # of ``bg_bank`` rows (finest scale; f^2 fewer on coarser ones); False: one bank for all
    region: bool = True
    bg_bank: int = 256
    # fewer training sets than this: no region. The union of few parts' silhouettes misses
    # where good parts reach (bench/linespeed.py, fixtured button: from 16 sets I-AUROC 0.751
    # with the region, 0.835 without; 32 sets 0.927 against 0.977; 64 sets 0.969 against
    # bcc29de's 0.967)
    region_min_sets: int = 64
    position: float = 0.0  # > 0: coordinates appended to features (fixtured/registered parts)
    fusion: str = "max"
    score: str = "max"
    sigma: float = 4.0
    batch_size: int = 8
    # global branches fused into the graph (afrd.model.memory.branches; the logical preset)
    branches: tuple[str, ...] = ()


def _batches(arrays: Sequence[np.ndarray], batch: int):
    for i in range(0, len(arrays), batch):
        yield torch.from_numpy(np.stack(arrays[i : i + batch]))


@torch.no_grad()
def _patches(features: Features, arrays: Sequence[np.ndarray], batch: int) -> list[torch.Tensor]:
    """Per scale, [K sets, N, Q, dim] patch features of uint8 [N, H, W, 3] arrays."""
    per_batch = [features(x) for x in _batches(arrays, batch)]
    return [torch.cat(f) for f in zip(*per_batch, strict=True)]


@torch.no_grad()
def raw_maps(
    model: MemoryBank, arrays: Sequence[np.ndarray], batch: int = 8, features: Features = None
) -> list:
    """Per scale, per-light raw distance maps [K, N, grid, grid] of uint8 [N, H, W, 3] arrays."""
    out = []
    feats = _patches(features or eager_features(model), arrays, batch)
    for h, f in zip(model.heads, feats, strict=True):
        if model.position > 0:  # the fitted coordinates (an exported extractor may predate them)
            f[..., -2:] = h.coords
        out.append(torch.cat([h.distances(x) for x in f.split(batch)]))
    return out


def _coreset(points: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """[N, M, D] -> [N, k, D]: each light's greedy k-center coreset of its M points."""
    k = max(1, min(k, points.shape[1]))
    return torch.stack([p[greedy_coreset(p, k, seed)] for p in points])


def fit_bank(
    model: MemoryBank,
    arrays: Sequence[np.ndarray],
    opts: MemoryOptions,
    seed: int = 0,
    features: Features = None,
) -> list[dict]:
    """Fill ``model``'s per-light banks, at every scale, with coresets of the patches of
    ``arrays`` (the part's region apart from the background when ``opts.region``)."""
    mask = part_mask(arrays) if opts.region and len(arrays) >= opts.region_min_sets else None
    info = []
    finest = min(h.factor for h in model.heads)
    all_feats = _patches(features or eager_features(model), arrays, opts.batch_size)
    for head, feats in zip(model.heads, all_feats, strict=True):  # [K, N, Q, D] each
        if model.position > 0:
            # coordinates in units of the features' spread, so ``position`` means the same for
            # every teacher and layer choice: 1.0 = crossing the part weighs like a typical
            # feature difference
            spread = float(feats[..., :-2].std(dim=(0, 2)).norm(dim=-1).mean())
            head.set_position_scale(model.position * spread)
            feats[..., -2:] = head.coords
        per_light = feats.transpose(0, 1)  # [N, K, Q, D]
        shrink = (head.factor // finest) ** 2
        region = patch_region(mask, head.grid)
        if region is not None and not bool(region.any()):
            region = None
        inside = per_light if region is None else per_light[:, :, region]
        total = inside.shape[1] * inside.shape[2]
        k = max(1, min(opts.max_bank // shrink, int(round(opts.coreset * total))))
        bank = _coreset(inside.flatten(1, 2), k, seed)
        bg = 0
        if region is not None and not bool(region.all()):
            outside = per_light[:, :, ~region].flatten(1, 2)
            bg_bank = _coreset(outside, max(1, opts.bg_bank // shrink), seed)
            bank, bg = torch.cat([bank, bg_bank], 1), bg_bank.shape[1]
        head.set_bank(bank, region, bg)
        info.append(
            {
                "scale": head.factor,
                "patches_per_light": per_light.shape[1] * per_light.shape[2],
                "region_patches": int(region.sum()) if region is not None else head.grid**2,
                "bank_per_light": k,
                "background_bank": bg,
            }
        )
    return info


def fit_normalisation(
    model: MemoryBank, arrays: Sequence[np.ndarray], batch: int = 8, features: Features = None
) -> list:
    """Per scale and light: mean and std of the maximum of the raw map over held-out normal
    sets."""
    if len(arrays) < MIN_HELD_OUT:
        raise DataError(
            f"memory normalisation needs at least {MIN_HELD_OUT} held-out normal sets, "
            f"got {len(arrays)}"
        )
    info = []
    for head, maps in zip(model.heads, raw_maps(model, arrays, batch, features), strict=True):
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
    opts = opts or MemoryOptions(
        scales=tuple(getattr(cfg, "memory_scales", (1,))),
        branches=tuple(getattr(cfg, "memory_global", ())),
    )
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
    model = (BankWithBranches if opts.branches else MemoryBank)(
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
        **({"branches": parse_branches(opts.branches)} if opts.branches else {}),
    ).eval()
    features = onnx_features(model)  # the teacher on ONNX Runtime: 4x eager PyTorch's speed
    bank_info = fit_bank(model, arrays, opts, cfg.seed, features)
    norm_info = {
        "source": source,
        "sets": len(held),
        "scales": fit_normalisation(model, held, opts.batch_size, features),
    }
    if opts.branches:
        norm_info["global"] = fit_branches(model, arrays, held, opts.batch_size, cfg.seed, features)
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
        "memory_fit": {
            "coreset": opts.coreset,
            "max_bank": opts.max_bank,
            "region": opts.region,
            "region_min_sets": opts.region_min_sets,
            "bg_bank": opts.bg_bank,
            "features": features.engine,
            "scales": bank_info,
        },
        "light_norm": norm_info,
        "train_seconds": round(seconds, 2),
        "registration": registration.to_dict() if registration else None,
        "preset": (getattr(cfg, "extra", None) or {}).get("preset"),
    }
    path = save_checkpoint(Path(cfg.out) / "model.pt", model, config)
    banks = " + ".join(f"{b['bank_per_light']} (1/{b['scale']})" for b in bank_info)
    print(
        f"afrd train: memory bank of {banks} patches x {len(lights)} lights from "
        f"{len(arrays)} sets in {seconds:.1f} s",
        flush=True,
    )
    return path
