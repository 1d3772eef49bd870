"""Per-pixel normalisation of the anomaly map by statistics of normal parts.

Why: the raw map (1 - cos, summed over scales) is not equally noisy everywhere. Where normal
parts legitimately vary most (e.g. a button's four holes at a random rotation on a glossy dome,
under a fixed highlight), the student restores the teacher worst on *every* part, so the maximum
of the raw map lands there and the image score stops tracking defects. Dividing each pixel by
how much it varies on normal parts (``z = (m - mean) / std``) turns the map into "how unusual
for this pixel", the score into its maximum. The statistics are buffers of the AFRD model
(``map_mean``, ``map_std``), so checkpoints carry them and the exported ONNX graph applies them.
Fit them on normal parts the student did not train on: training parts are restored better than
new ones, which understates the variation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from afrd.errors import DataError
from afrd.model.distill.network import AFRD
from afrd.model.scoring import GaussianBlur


@torch.no_grad()
def raw_maps(model: AFRD, sets: Sequence, batch_size: int = 8) -> torch.Tensor:
    """Un-normalised anomaly maps [K, H, W] of image sets (uint8 [N, H, W, 3] or ImageSets)."""
    from afrd.model.inference import InferenceModel

    infer = InferenceModel(model).eval()
    dev = model.map_mean.device
    out = []
    for i in range(0, len(sets), batch_size):
        chunk = [np.asarray(getattr(s, "images", s)) for s in sets[i : i + batch_size]]
        x = torch.from_numpy(np.stack(chunk)).to(dev)
        amap, _ = infer.scorer(*model(_norm(x, infer)))
        out.append(amap.cpu())
    return torch.cat(out)


def _norm(x: torch.Tensor, infer) -> torch.Tensor:
    return (x.permute(0, 1, 4, 2, 3).float() - infer.mean) / infer.std


MIN_SETS = 4  # fewer normal sets make a useless per-pixel std


@torch.no_grad()
def fit_map_stats(
    model: AFRD, sets: Sequence, floor_quantile: float = 0.9, sigma: float = 4.0
) -> dict:
    """Set ``model.map_mean``/``map_std`` from normal image sets; returns a summary.

    Mean and std are smoothed with the map's own Gaussian (few parts make a noisy estimate) and
    the std is floored at its ``floor_quantile`` over the image, so flat background pixels whose
    map never moves cannot turn sensor noise into a huge z-score.
    """
    if len(sets) < MIN_SETS:
        raise DataError(
            f"map statistics need at least {MIN_SETS} normal image sets, got {len(sets)}"
        )
    if any(getattr(s, "label", 0) for s in sets):
        raise DataError("map statistics must be fitted on normal (label 0) image sets only")
    was_training = model.training
    model.eval()
    maps = raw_maps(model, sets)
    blur = GaussianBlur(sigma)
    mean = blur(maps.mean(0, keepdim=True))[0]
    std = blur(maps.std(0, keepdim=True))[0]
    floor = torch.quantile(std.flatten(), floor_quantile).clamp_min(1e-6)
    std = std.clamp_min(floor)
    model.map_mean.copy_(mean.to(model.map_mean))
    model.map_std.copy_(std.to(model.map_std))
    model.train(was_training)
    return {
        "sets": len(sets),
        "std_floor": float(floor),
        "std_max": float(std.max()),
        "mean_max": float(mean.max()),
        "argmax_std": [int(v) for v in np.unravel_index(int(std.argmax()), tuple(std.shape))],
    }


def fit_checkpoint(path, sets: Sequence, out=None) -> dict:
    """Fit the map statistics of checkpoint ``path`` on normal ``sets`` and save it (to ``out``,
    default in place); the summary is recorded in the checkpoint config under ``map_stats``."""
    from afrd.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    blob = read_checkpoint(path)
    model, cfg = load_checkpoint(path)
    lights = tuple(cfg["lights"])
    from afrd.model.sets import resize_set

    arrays = [resize_set(s, model.image_size, lights) for s in sets]
    if any(getattr(s, "label", 0) for s in sets):
        raise DataError("map statistics must be fitted on normal (label 0) image sets only")
    info = fit_map_stats(model, arrays)
    config = {**blob["config"], "map_stats": info}
    save_checkpoint(out or path, model, config, None, blob.get("epoch", 0), blob.get("history"))
    return info
