"""Fusion of the N per-light teacher feature maps into one map per scale.

Every fusion returns ``(fused, weights)``: ``fused[s]`` is [B, C, h, w] and ``weights[s]`` is
[B, N] (non-negative, summing to 1 over the lights) so the weighting can be inspected.

- ``attention``: AFRD's form, w = softmax(FC(concat(flatten(F^1..F^N)))) per scale.
- ``attention-pooled``: the same FC after global average pooling (ablation, few parameters).
- ``mean``: w = 1/N.
- ``single:K``: w = one-hot(K); the network only runs the teacher on light K (plain RD).
- ``restore-max``: pooled attention builds the bottleneck input; the student then restores
  every light's own teacher features and the map is the maximum over lights (distill/network.py).
"""

from __future__ import annotations

import torch
from torch import nn

from afrd.errors import ConfigError

FUSIONS = ("attention", "attention-pooled", "mean", "single:K", "restore-max")


def parse_fusion(fusion: str, n_lights: int) -> tuple[str, int | None]:
    """``("single", K)`` for ``single:K``, else ``(fusion, None)``; ConfigError if unknown."""
    if fusion.startswith("single:"):
        try:
            k = int(fusion.split(":", 1)[1])
        except ValueError:
            k = -1
        if not 0 <= k < n_lights:
            raise ConfigError(f"fusion single:K needs 0 <= K < {n_lights} lights, got {fusion!r}")
        return "single", k
    if fusion not in FUSIONS:
        raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    return fusion, None


class Fusion(nn.Module):
    """Weights per scale from the per-light feature maps [B, N, C, h, w]."""

    def __init__(
        self,
        kind: str,
        n_lights: int,
        channels: tuple[int, ...],
        sizes: tuple[tuple[int, int], ...],
        light: int | None = None,
    ) -> None:
        super().__init__()
        self.kind, self.n_lights, self.light = kind, n_lights, light
        self.fcs = nn.ModuleList()
        if kind == "attention":
            for c, (h, w) in zip(channels, sizes, strict=True):
                self.fcs.append(nn.Linear(n_lights * c * h * w, n_lights))
        elif kind in ("attention-pooled", "restore-max"):
            for c in channels:
                self.fcs.append(nn.Linear(n_lights * c, n_lights))
        if light is not None:
            self.register_buffer(
                "onehot", nn.functional.one_hot(torch.tensor(light), n_lights).float()
            )

    def _weights(self, s: int, f: torch.Tensor) -> torch.Tensor:
        if self.kind == "attention":
            return torch.softmax(self.fcs[s](f.flatten(1)), dim=1)
        if self.kind in ("attention-pooled", "restore-max"):
            return torch.softmax(self.fcs[s](f.mean(dim=(3, 4)).flatten(1)), dim=1)
        if self.light is not None:
            return self.onehot.expand(f.shape[0], -1)
        return torch.full_like(f[:, :, 0, 0, 0], 1.0 / self.n_lights)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fused, weights = [], []
        for s, f in enumerate(feats):
            if self.light is not None:  # teacher only ran on light K: f is [B, 1, C, h, w]
                fused.append(f[:, 0])
                weights.append(self._weights(s, f))
                continue
            w = self._weights(s, f)
            fused.append((w[:, :, None, None, None] * f).sum(dim=1))
            weights.append(w)
        return fused, weights
