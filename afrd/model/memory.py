"""The multi-light memory bank: a training-free detector on the frozen teacher's features.

Per light, every patch of a part is described by the teacher's mid-level maps, averaged over
its neighbourhood (PatchCore's "locally aware" features) and brought to one resolution; its
anomaly is the distance to the nearest patch in that light's memory bank (a coreset of the
normal training patches). Each light's distance map is normalised by how that light's maximum
varies on held-out normal parts, so a light whose features are naturally noisier does not
dominate, then the lights are fused by a maximum (a defect seen under one light only is not
diluted by the five that do not show it), upsampled, blurred and scored.

``MemoryBank`` is its own inference module: uint8 [B, N, H, W, 3] in, (map [B, H, W], score
[B]) out, with the bank inside as a constant, so the ONNX graph is the whole function, as for
``afrd.model.inference.InferenceModel``. Fitting lives in ``afrd.model.memory_fit``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from afrd.errors import ConfigError
from afrd.model.backbones import build_teacher
from afrd.model.inference import IMAGENET_MEAN, IMAGENET_STD
from afrd.model.scoring import GaussianBlur

KIND = "memory"
FUSIONS = ("max", "mean")
DISTANCE_CHUNK = 1024  # bank rows per matmul: bounds memory at B*N*Q*1024 floats


def parse_score(score: str) -> int:
    """``max`` -> 1, ``topk:K`` -> K: the image score is the mean of the K largest map pixels."""
    if score == "max":
        return 1
    if score.startswith("topk:"):
        try:
            k = int(score[5:])
        except ValueError:
            k = 0
        if k >= 1:
            return k
    raise ConfigError(f"memory score must be 'max' or 'topk:K' with K >= 1, got {score!r}")


class MemoryBank(nn.Module):
    """Frozen teacher per light -> patch features -> nearest-neighbour distance to the light's
    bank -> per-light normalisation -> fusion over lights -> upsampling, blur, image score.

    ``layers`` are teacher scales (0, 1, 2 = strides 4, 8, 16), each averaged over its
    ``pool`` x ``pool`` neighbourhood, then brought to one grid of patches ``stride`` pixels
    apart (8 measured as good as 4 at 128 px, with 4x fewer patches to search). ``position`` > 0 appends the patch's (row, column), scaled, to its
    feature, so the nearest neighbour must also lie near the same place of the part (for
    fixtured or registered parts: catches a component in the wrong place). The bank, its
    squared norms and the normalisation are buffers, so checkpoints and ONNX carry them.
    """

    kind = KIND
    views = 1

    def __init__(
        self,
        teacher: str = "efficientnet_lite0",
        n_lights: int = 6,
        image_size: int = 128,
        layers: Sequence[int] = (0, 1),
        pool: int = 3,
        stride: int = 8,
        bank_size: int = 1,
        position: float = 0.0,
        fusion: str = "max",
        score: str = "max",
        sigma: float = 4.0,
        teacher_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        layers = tuple(int(v) for v in layers)
        if not layers or any(v not in (0, 1, 2) for v in layers) or len(set(layers)) < len(layers):
            raise ConfigError(f"memory layers must be distinct scales of 0, 1, 2, got {layers}")
        if fusion not in FUSIONS:
            raise ConfigError(f"memory fusion must be one of {FUSIONS}, got {fusion!r}")
        if pool < 1 or pool % 2 == 0:
            raise ConfigError(f"memory pool must be an odd size >= 1, got {pool}")
        if n_lights < 1 or bank_size < 1:
            raise ConfigError(f"memory needs n_lights and bank_size >= 1 ({n_lights}, {bank_size})")
        self.topk = parse_score(score)
        self.teacher_name, self.n_lights, self.image_size = teacher, n_lights, image_size
        self.layers, self.pool, self.position = tuple(sorted(layers)), pool, float(position)
        self.fusion_name, self.score_name, self.sigma = fusion, score, sigma
        self.teacher, self.teacher_weights_source = build_teacher(teacher, teacher_weights)
        if image_size % 32 or image_size < 32:
            raise ConfigError(f"image_size must be a multiple of 32 and >= 32, got {image_size}")
        if stride not in (4, 8, 16):
            raise ConfigError(f"memory stride must be 4, 8 or 16 pixels, got {stride}")
        self.stride = stride
        self.grid = image_size // stride  # patches per side
        feat_dim = sum(self.teacher.channels[i] for i in self.layers)
        self.dim = feat_dim + (2 if self.position > 0 else 0)
        if self.topk > image_size * image_size:
            raise ConfigError(f"memory score {score!r}: K exceeds the {image_size}^2 map pixels")
        self.blur = GaussianBlur(sigma)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0)
        self.register_buffer("bank", torch.zeros(n_lights, bank_size, self.dim))
        self.register_buffer("bank_sq", torch.zeros(n_lights, bank_size))
        # (row, column) in [0, 1] times the fitted scale; used only when position > 0
        self.register_buffer("coords", torch.zeros(self.grid * self.grid, 2))
        # per light: mean and std of the maximum of its raw map on held-out normal parts
        self.register_buffer("light_mean", torch.zeros(n_lights))
        self.register_buffer("light_std", torch.ones(n_lights))

    @property
    def bank_size(self) -> int:
        return int(self.bank.shape[1])

    def set_bank(self, bank: torch.Tensor) -> None:
        """Install per-light banks [N, K, dim] (replaces the buffer: K may change)."""
        if bank.ndim != 3 or bank.shape[0] != self.n_lights or bank.shape[2] != self.dim:
            raise ConfigError(
                f"memory bank must be [{self.n_lights}, K, {self.dim}], got {tuple(bank.shape)}"
            )
        bank = bank.to(self.bank).contiguous()
        self.bank = bank
        self.bank_sq = (bank**2).sum(-1)

    def set_position_scale(self, scale: float) -> None:
        """Coordinates times ``scale`` (feature units); the fit sets it from the features."""
        g = torch.linspace(0.0, 1.0, self.grid)
        yy, xx = torch.meshgrid(g, g, indexing="ij")
        self.coords = torch.stack([yy, xx], -1).reshape(-1, 2).to(self.coords) * float(scale)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, N, H, W, 3] -> patch features [B, N, Q, dim] (Q = grid^2, row-major)."""
        b, n = images.shape[0], images.shape[1]
        x = (images.permute(0, 1, 4, 2, 3).float() - self.mean) / self.std
        with torch.no_grad():
            feats = self.teacher(x.flatten(0, 1))
        size = (self.grid, self.grid)
        maps = []
        for i in self.layers:
            f = feats[i]
            if self.pool > 1:  # the patch's neighbourhood, not the pixel alone
                f = F.avg_pool2d(f, self.pool, 1, self.pool // 2, count_include_pad=False)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            maps.append(f)
        f = torch.cat(maps, 1).flatten(2).transpose(1, 2)  # [B*N, Q, C]
        f = f.unflatten(0, (b, n))
        if self.position > 0:
            c = self.coords.expand(b, n, -1, -1)
            f = torch.cat([f, c], -1)
        return f

    def raw_maps(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, N, H, W, 3] -> per-light nearest-neighbour distances [B, N, grid, grid]."""
        q = self.patches(images)  # [B, N, Q, D]
        q_sq = (q**2).sum(-1, keepdim=True)
        best = None
        for start in range(0, self.bank_size, DISTANCE_CHUNK):  # static: unrolled in ONNX
            stop = start + DISTANCE_CHUNK
            bank, bank_sq = self.bank[:, start:stop], self.bank_sq[:, None, start:stop]
            m = (q_sq - 2 * torch.matmul(q, bank.transpose(1, 2)) + bank_sq).amin(-1)
            best = m if best is None else torch.minimum(best, m)
        dist = best.clamp_min(0).sqrt()
        return dist.unflatten(-1, (self.grid, self.grid))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (self.raw_maps(images) - self.light_mean[:, None, None]) / self.light_std[:, None, None]
        fused = z.amax(1) if self.fusion_name == "max" else z.mean(1)
        size = (self.image_size, self.image_size)
        amap = F.interpolate(fused[:, None], size=size, mode="bilinear", align_corners=False)
        amap = self.blur(amap[:, 0])
        flat = amap.flatten(1)
        score = flat.amax(1) if self.topk == 1 else flat.topk(self.topk, dim=1).values.mean(1)
        return amap.float(), score.float()

    def config(self) -> dict:
        """Constructor arguments (and the weights' source) as stored in checkpoints."""
        return {
            "model_kind": KIND,
            "teacher": self.teacher_name,
            "fusion": self.fusion_name,
            "n_lights": self.n_lights,
            "image_size": self.image_size,
            "teacher_weights_source": self.teacher_weights_source,
            "memory": {
                "layers": list(self.layers),
                "pool": self.pool,
                "stride": self.stride,
                "bank_size": self.bank_size,
                "position": self.position,
                "score": self.score_name,
                "sigma": self.sigma,
            },
        }

    @classmethod
    def from_config(cls, config: dict, teacher_weights: str | None = "random") -> MemoryBank:
        """Shaped for a checkpoint's config (random teacher: the state dict brings the weights)."""
        m = config.get("memory")
        if not isinstance(m, dict):
            raise ConfigError("memory checkpoint config misses its 'memory' section")
        return cls(
            teacher=config["teacher"],
            n_lights=len(config["lights"]),
            image_size=int(config["image_size"]),
            layers=m["layers"],
            pool=int(m["pool"]),
            stride=int(m["stride"]),
            bank_size=int(m["bank_size"]),
            position=float(m["position"]),
            fusion=config["fusion"],
            score=m["score"],
            sigma=float(m["sigma"]),
            teacher_weights=teacher_weights,
        )
