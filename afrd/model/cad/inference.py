"""CAD's exported function: both students' maps, each z-scored, combined; score = the maximum."""

from __future__ import annotations

import torch
from torch import nn

from afrd.errors import ConfigError
from afrd.model.cad.network import CAD, COMBINES, KIND
from afrd.model.inference import IMAGENET_MEAN, IMAGENET_STD


class CADInference(nn.Module):
    """uint8 [B, N, H, W, 3] -> (combined map [B, H, W], score [B]): both students' maps
    z-scored by their own per-pixel statistics, then summed or maxed (``combine``; ``None``:
    the model's). ``part="local"|"global"`` scores one student alone (benchmarks)."""

    kind = KIND

    def __init__(self, model: CAD, combine: str | None = None, part: str = "both") -> None:
        super().__init__()
        self.model = model.eval()
        self.combine = combine or model.combine
        if self.combine not in COMBINES or part not in ("both", "local", "global"):
            raise ConfigError(f"CADInference: combine {self.combine!r}, part {part!r}")
        self.part = part
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0)

    @property
    def lights(self) -> int:
        return self.model.n_lights

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 1, 4, 2, 3).float() - self.mean) / self.std
        lm, gm = self.model.maps(x)
        m = self.model
        zl = (lm - m.map_mean) / m.map_std
        zg = (gm - m.global_mean) / m.global_std
        if self.part == "local":
            amap = zl
        elif self.part == "global":
            amap = zg
        else:
            amap = zl + zg if self.combine == "sum" else torch.maximum(zl, zg)
        return amap.float(), amap.flatten(1).amax(dim=1).float()
