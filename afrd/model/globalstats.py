"""Global statistics on the teacher's patch features of registered parts (issue 27): two
branches that see what a position-agnostic memory bank cannot, measured by bench/logical.py.

Both read the features the memory bank already computes (``MemoryBank.patches``: per light,
[Q = grid^2, dim] per part at one input scale), so a bank's teacher pass feeds them too.

- ``PositionStats`` (PaDiM-like): per light and grid position the mean and covariance of the
  normal parts' features (pooled over the 3x3 neighbouring positions: more samples, tolerance
  to the registration's residual), shrunk towards a scaled identity; a patch's anomaly is its
  Mahalanobis distance. Catches a component where this product never has one (layout).
- ``PartHistogram`` (a bag of component words): k-means prototypes of the normal patches (all
  lights of a patch concatenated, k-means++ seeding so rare patches get prototypes of their
  own), of which only the rare ones are kept (on average under ``rare`` of a part's patches:
  the components', not the plate's or the background's, whose counts vary with pose and
  only add noise); each part is described by its soft counts of those prototypes in the left
  and the right half of the registered image; its anomaly is the distance to the nearest
  training part's description. Counts components and relates far-apart halves (count,
  pairing), which no window can. With every prototype kept, the plate's and background's
  counts drowned the studs' (a probe on the selection seed; BENCHMARKS.md has the runs).

Scores are raw; bench/logical.py normalises each on held-out normals before fusing by a max.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _grid_of(q: int) -> int:
    g = int(round(q**0.5))
    if g * g != q:
        raise ValueError(f"patch features must lie on a square grid, got {q} patches")
    return g


class PositionStats:
    """Per light and position Gaussian of patch features; ``shrink`` is the weight of the
    identity (times the mean variance) mixed into each covariance."""

    def __init__(self, shrink: float = 0.1, neighbourhood: int = 3) -> None:
        self.shrink, self.nb = shrink, neighbourhood

    @torch.no_grad()
    def fit(self, feats: torch.Tensor) -> PositionStats:
        """``feats`` [K parts, N lights, Q, dim] of normal parts."""
        k, n, q, d = feats.shape
        g = _grid_of(q)
        f = feats.double()
        s1 = f.mean(0)  # [N, Q, d]
        s2 = torch.einsum("knqi,knqj->nqij", f, f) / k  # [N, Q, d, d]

        def pool(x: torch.Tensor) -> torch.Tensor:  # mean over the neighbouring positions
            shape = x.shape
            x = x.reshape(n, g, g, -1).permute(0, 3, 1, 2)
            x = F.avg_pool2d(x, self.nb, 1, self.nb // 2, count_include_pad=False)
            return x.permute(0, 2, 3, 1).reshape(shape)

        mean, second = pool(s1), pool(s2)
        cov = second - mean[..., :, None] * mean[..., None, :]
        scale = torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1, keepdim=True)[..., None]
        eye = torch.eye(d, dtype=cov.dtype)
        cov = (1 - self.shrink) * cov + self.shrink * scale * eye
        self.mean = mean.float()
        self.prec = torch.linalg.inv(cov).float()
        return self

    @torch.no_grad()
    def maps(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, N, Q, dim] -> Mahalanobis distances [B, N, Q]."""
        z = feats - self.mean
        return torch.einsum("bnqi,nqij,bnqj->bnq", z, self.prec, z).clamp_min(0).sqrt()


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability ~ squared distance."""
    cent = [x[int(torch.randint(len(x), (1,), generator=gen))]]
    d2 = (x - cent[0]).pow(2).sum(1)
    for _ in range(k - 1):
        i = int(torch.multinomial(d2 / d2.sum(), 1, generator=gen))
        cent.append(x[i])
        d2 = torch.minimum(d2, (x - x[i]).pow(2).sum(1))
    return torch.stack(cent)


class PartHistogram:
    """Soft counts of the rare ones of ``k`` prototypes per image half; nearest-training-part
    distance."""

    def __init__(
        self, k: int = 32, rare: float = 0.01, iters: int = 15, sample: int = 20000, seed: int = 0
    ) -> None:
        self.k, self.rare, self.iters, self.sample, self.seed = k, rare, iters, sample, seed

    def _patches(self, feats: torch.Tensor) -> torch.Tensor:
        b, n, q, d = feats.shape
        x = feats.permute(0, 2, 1, 3).reshape(b, q, n * d)  # all lights of a patch
        return (x - self.mu) / self.sd

    @torch.no_grad()
    def fit(self, feats: torch.Tensor) -> PartHistogram:
        b, n, q, d = feats.shape
        flat = feats.permute(0, 2, 1, 3).reshape(-1, n * d)
        self.mu, self.sd = flat.mean(0), flat.std(0) + 1e-6
        gen = torch.Generator().manual_seed(self.seed)
        x = (flat - self.mu) / self.sd
        x = x[torch.randperm(len(x), generator=gen)[: self.sample]]
        cent = _kmeans_pp(x, self.k, gen)
        for _ in range(self.iters):  # Lloyd's k-means
            lab = torch.cdist(x, cent).argmin(1)
            for j in range(self.k):
                pick = x[lab == j]
                if len(pick):
                    cent[j] = pick.mean(0)
        self.cent = cent
        self.tau = torch.cdist(x, cent).min(1).values.pow(2).mean()
        self.grid = _grid_of(q)
        share = self._weights(feats).mean((0, 1))  # each prototype's mean share of a part
        self.keep = share < self.rare
        if not bool(self.keep.any()):  # no rare prototype: keep the rarest one
            self.keep = share == share.min()
        self.train = self.describe(feats)
        return self

    def _weights(self, feats: torch.Tensor) -> torch.Tensor:
        x = self._patches(feats)
        return torch.softmax(-torch.cdist(x, self.cent[None]).pow(2) / self.tau, -1)

    @torch.no_grad()
    def describe(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, N, Q, dim] -> [B, 2 kept]: square roots of the kept prototypes' soft counts,
        left half then right half."""
        w = self._weights(feats)[..., self.keep]  # [B, Q, kept]
        g = self.grid
        col = torch.arange(g * g) % g
        left = w[:, col < g // 2].sum(1)
        right = w[:, col >= g // 2].sum(1)
        return torch.cat([left, right], 1).sqrt()

    @torch.no_grad()
    def scores(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.cdist(self.describe(feats), self.train).min(1).values
