"""Greedy k-center coreset (PatchCore's subsampling of a memory bank).

Why: a memory bank of every normal patch is large and slow to search; k-center picks points so
that every dropped patch lies close to a kept one (it minimises the largest such distance,
within a factor 2), so nearest-neighbour distances to the coreset stay close to those to the
full bank, unlike a random subset that drops rare-but-normal patches.

Several picks per pass over the points: the textbook loop reads every point once per pick (a
matrix-vector product), which is bound by memory bandwidth and collapses when another job
shares the machine (issue 23: 170-600 s instead of 40 s). Here each pass takes the ``POOL``
points farthest from the centres so far, picks greedily among them with their pairwise
distances, and stops the pass as soon as the best remaining candidate is nearer than the
farthest point left outside the pool; the farthest point overall is then always in the pool,
so every pick is the one the one-at-a-time loop makes (same centres, up to ties and rounding).
One matrix product per pass brings every point's distance up to date: a few dozen passes
instead of thousands, compute-bound instead of memory-bound.
"""

from __future__ import annotations

import numpy as np
import torch

from afrd.errors import ConfigError

POOL = 1024  # candidates per pass
MAX_PICKS = 256  # picks per pass at most
ROWS = 2048  # points per block of the distance update


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
    z = z.contiguous()
    first = int(torch.randint(m, (1,), generator=gen))
    chosen = torch.empty(k, dtype=torch.int64)
    chosen[0] = first
    # squared distance of every point to its nearest centre so far, as |z|^2 - 2 z.c + |c|^2
    sq = (z * z).sum(1)
    nearest = sq - 2 * (z @ z[first]) + sq[first]
    nearest[first] = -np.inf  # a centre is never picked again (rounding leaves it near 0)
    n = 1
    while n < k:
        picked = _picks_in_pool(z, sq, nearest, k - n)
        chosen[n : n + len(picked)] = picked
        n += len(picked)
        _update(z, sq, z[picked], nearest)
        nearest[picked] = -np.inf
    return chosen


def _update(z: torch.Tensor, sq: torch.Tensor, c: torch.Tensor, nearest: torch.Tensor) -> None:
    """nearest = min(nearest, squared distance to the new centres ``c``), in row blocks that
    stay in cache."""
    c_sq, ct = (c * c).sum(1)[None], c.T.contiguous()
    for i in range(0, z.shape[0], ROWS):
        d = torch.addmm(c_sq, z[i : i + ROWS], ct, alpha=-2.0).amin(1).add_(sq[i : i + ROWS])
        torch.minimum(nearest[i : i + ROWS], d, out=nearest[i : i + ROWS])


def _picks_in_pool(
    z: torch.Tensor, sq: torch.Tensor, nearest: torch.Tensor, left: int
) -> torch.Tensor:
    """The next picks of the one-at-a-time greedy loop that can be made among the ``POOL``
    farthest points alone (at least one, at most ``min(left, MAX_PICKS)``)."""
    m = z.shape[0]
    vals, cand = nearest.topk(min(m, POOL))
    # every point outside the pool is at most this far from the centres (and only gets nearer)
    outside = float(vals[-1]) if len(cand) < m else -np.inf
    cz, csq = z[cand], sq[cand]
    pair = (csq[:, None] - 2 * (cz @ cz.T) + csq[None]).numpy()
    dist = vals.numpy().copy()
    picks: list[int] = []
    while len(picks) < min(left, MAX_PICKS):
        i = int(dist.argmax())
        if picks and dist[i] < outside:
            break  # the farthest point may now lie outside the pool: a new pass
        picks.append(i)
        np.minimum(dist, pair[i], out=dist)
        dist[i] = -np.inf
    return cand[torch.as_tensor(picks)]


def coverage_radius(points: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> float:
    """The largest distance from any point [M, D] to its nearest centre [K, D]."""
    worst = 0.0
    c2 = (centres**2).sum(1)
    for i in range(0, len(points), chunk):
        p = points[i : i + chunk]
        d2 = (p**2).sum(1, keepdim=True) - 2 * p @ centres.T + c2
        worst = max(worst, float(d2.clamp_min(0).amin(1).max().sqrt()))
    return worst
