"""The peer of bench/linespeed.py: anomalib's PatchCore, given the same EfficientNet-Lite0
ImageNet features (no weights can be downloaded here), one model per light at 256 px, the
lights fused by a maximum over z-normalised light scores (held-out normal sets).

What is anomalib's own: ``PatchcoreModel`` (3x3 average pooling, embedding, its k-center
greedy coreset ``KCenterGreedy`` with a sparse random projection, the nearest-neighbour search
and the re-weighted image score over 9 neighbours), all at its defaults (10 % coreset). What is
ours: the feature extractor, Lite0 stages 2 and 3 (strides 8 and 16: the pairing PatchCore makes
of WideResNet's layer2 and layer3) in place of the timm backbone it would download, and the
fusion of the six lights. Eager PyTorch, as anomalib runs it. Needs the ``bench`` extra
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from afrd.model.backbones import build_teacher
from afrd.model.inference import IMAGENET_MEAN, IMAGENET_STD

LAYERS = ("layer2", "layer3")  # anomalib's names; Lite0 stages 2 and 3 stand in for them
CORESET = 0.1  # anomalib's default coreset_sampling_ratio
NEIGHBOURS = 9  # anomalib's default num_neighbors


class _Lite0Layers(nn.Module):
    """The frozen Lite0 teacher answering as anomalib's feature extractor: {layer: map}."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.teacher(x)
        return {LAYERS[0]: feats[1], LAYERS[1]: feats[2]}


def _normalised(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> ImageNet-normalised float [B, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class PeerPatchCore:
    """Six anomalib PatchCore models (one per light) and their fusion."""

    def __init__(self, n_lights: int) -> None:
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        teacher, _ = build_teacher("efficientnet_lite0", None)
        extractor = _Lite0Layers(teacher.eval())
        self.models = []
        for _ in range(n_lights):
            # resnet18 without weights only so that the constructor needs no download; its
            # extractor is replaced by the Lite0 one before any image is seen
            m = PatchcoreModel(
                layers=list(LAYERS),
                backbone="resnet18",
                pre_trained=False,
                num_neighbors=NEIGHBOURS,
            )
            m.feature_extractor = extractor
            self.models.append(m)
        self.mean = np.zeros(n_lights)
        self.std = np.ones(n_lights)

    @torch.no_grad()
    def fit(
        self, arrays: Sequence[np.ndarray], held: Sequence[np.ndarray], batch: int = 8
    ) -> float:
        """Memory banks from ``arrays`` ([N, H, W, 3] uint8 sets), light statistics from
        ``held``; returns the seconds it took."""
        t0 = time.perf_counter()
        for j, m in enumerate(self.models):
            m.train()
            for i in range(0, len(arrays), batch):
                m(_normalised(np.stack([a[j] for a in arrays[i : i + batch]])))
            m.subsample_embedding(CORESET)
            m.eval()
        raw = np.stack([self.light_scores(a) for a in held])  # [K, N]
        self.mean, self.std = raw.mean(0), np.maximum(raw.std(0), 1e-6)
        return time.perf_counter() - t0

    @torch.no_grad()
    def light_scores(self, images: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] uint8 -> each light's PatchCore image score [N]."""
        return np.array(
            [float(m(_normalised(images[j : j + 1])).pred_score) for j, m in enumerate(self.models)]
        )

    def score(self, images: np.ndarray) -> float:
        """The fused score: the maximum over lights of (score - mean) / std."""
        return float(((self.light_scores(images) - self.mean) / self.std).max())
