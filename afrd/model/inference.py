"""The function every engine computes: raw uint8 image set in, anomaly map and score out.

The input normalisation every kind shares, and ``InferenceModel``: that function for AFRD's
network (afrd.model.distill), which the ``afrd`` and ``dcam`` kinds export.
"""

from __future__ import annotations

import torch
from torch import nn

from afrd.model.distill.network import AFRD
from afrd.model.scoring import AnomalyScorer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InferenceModel(nn.Module):
    """uint8 [B, N, H, W, 3] RGB (H = W = model.image_size) -> (map float32 [B, H, W],
    score float32 [B]). Normalization, scoring, the per-pixel normal-map statistics
    (``model.map_mean``/``map_std``, identity unless fitted) and the max live inside, so the
    ONNX graph (dynamic batch, no data-dependent control flow) is the whole function."""

    def __init__(self, model: AFRD, sigma: float = 4.0) -> None:
        super().__init__()
        self.model = model.eval()
        self.scorer = AnomalyScorer(model.image_size, model.views, sigma)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0)

    @property
    def lights(self) -> int:
        return self.model.n_lights

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 1, 4, 2, 3).float()
        x = (x - self.mean) / self.std
        teacher, student = self.model(x)
        amap, _ = self.scorer(teacher, student)
        # z-score per pixel against normal parts (identity unless fitted, afrd.model.mapnorm)
        amap = (amap - self.model.map_mean) / self.model.map_std
        return amap.float(), amap.flatten(1).amax(dim=1).float()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, N, H, W, 3] -> ImageNet-normalized float [B, N, 3, H, W] (training input)."""
    x = images.permute(0, 1, 4, 2, 3).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 1, 3, 1, 1)
    return (x - mean) / std
