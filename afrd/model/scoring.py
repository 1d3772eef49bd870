"""Loss, anomaly map and image score: one module shared by training, evaluation and export."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("pixel", "flat")


def loss_pixel(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """AFRD eq. 5: per scale the mean over pixels of 1 - cos over channels, summed over scales."""
    return sum(
        (1 - F.cosine_similarity(t, s, dim=1)).mean() for t, s in zip(teacher, student, strict=True)
    )


def loss_flat(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """Official RD code: one cosine per sample over its whole flattened map, per scale."""
    return sum(
        (1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)).mean()
        for t, s in zip(teacher, student, strict=True)
    )


def distillation_loss(
    kind: str, teacher: list[torch.Tensor], student: list[torch.Tensor]
) -> torch.Tensor:
    if kind == "pixel":
        return loss_pixel(teacher, student)
    if kind == "flat":
        return loss_flat(teacher, student)
    from afrd.errors import ConfigError

    raise ConfigError(f"loss must be one of {LOSSES}, got {kind!r}")


class GaussianBlur(nn.Module):
    """Fixed separable Gaussian (reflect padding) as two convolutions, so it exports to ONNX."""

    def __init__(self, sigma: float = 4.0) -> None:
        super().__init__()
        radius = int(4 * sigma + 0.5)
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-(x**2) / (2 * sigma**2))
        k = k / k.sum()
        self.radius = radius
        self.register_buffer("kx", k.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("ky", k.view(1, 1, -1, 1), persistent=False)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        """[B, H, W] -> [B, H, W]; needs H, W > radius (16 for sigma 4)."""
        r = self.radius
        x = m[:, None]
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), self.kx)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), self.ky)
        return x[:, 0]


class AnomalyScorer(nn.Module):
    """Per scale 1 - cos over channels, bilinear upsampling to the input size, sum over scales,
    maximum over restored views (restore-max), Gaussian blur; score = maximum of the map."""

    def __init__(self, image_size: int, views: int = 1, sigma: float = 4.0) -> None:
        super().__init__()
        self.image_size, self.views = image_size, views
        self.blur = GaussianBlur(sigma)

    def raw_map(self, teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        total = None
        for t, s in zip(teacher, student, strict=True):
            d = (1 - F.cosine_similarity(t, s, dim=1))[:, None]
            d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)[:, 0]
            total = d if total is None else total + d
        if self.views > 1:
            total = total.unflatten(0, (-1, self.views)).amax(dim=1)
        return total

    def forward(
        self, teacher: list[torch.Tensor], student: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.blur(self.raw_map(teacher, student))
        return amap, amap.flatten(1).amax(dim=1)
