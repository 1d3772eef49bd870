"""AFRD's network: frozen teacher per light -> fusion -> one-class bottleneck -> reversed student.

The student every distillation kind builds on: the ``afrd`` kind is this network as it is,
CAD adds a global student beside it, DCAM training-only attention blocks on it.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from afrd.errors import ConfigError
from afrd.model.backbones import build_teacher
from afrd.model.distill.decoder import DECODER_LAYOUT, OneClassBottleneck, ReverseDecoder
from afrd.model.distill.fusion import Fusion, parse_fusion
from afrd.model.scoring import distillation_loss


class AFRD(nn.Module):
    """Attention Fusion Reverse Distillation over N lights.

    ``forward(x)`` takes ImageNet-normalized float [B, N, 3, H, W] and returns
    ``(teacher_feats, student_feats)``, lists over the three scales of [B*V, C, h, w] where
    ``V = self.views`` is 1 (the student restores the fused teacher map) or N for
    ``restore-max`` (the student restores every light's own map, batch order b-major).
    """

    def __init__(
        self,
        teacher: str = "wide_resnet50_2",
        fusion: str = "attention",
        n_lights: int = 6,
        image_size: int = 256,
        teacher_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if image_size % 32 or image_size < 32:
            raise ConfigError(f"image_size must be a multiple of 32 and >= 32, got {image_size}")
        if n_lights < 1:
            raise ConfigError(f"n_lights must be >= 1, got {n_lights}")
        kind, light = parse_fusion(fusion, n_lights)
        self.teacher_name, self.fusion_name = teacher, fusion
        self.n_lights, self.image_size = n_lights, image_size
        self.teacher, self.teacher_weights_source = build_teacher(teacher, teacher_weights)
        ch = self.teacher.channels
        sizes = tuple((image_size // s, image_size // s) for s in self.teacher.strides)
        self.fusion = Fusion(kind, n_lights, ch, sizes, light)
        self.light = light
        lay = DECODER_LAYOUT[teacher]
        self.bottleneck = OneClassBottleneck(ch, lay["bottleneck_width"])
        self.decoder = ReverseDecoder(
            self.bottleneck.out_channels, ch, lay["widths"], lay["blocks"]
        )
        self.views = n_lights if kind == "restore-max" else 1
        if self.views > 1:  # which light the student should restore, added to the code
            self.light_embed = nn.Parameter(
                torch.zeros(n_lights, self.bottleneck.out_channels, 1, 1)
            )
        self.last_fusion_weights: list[torch.Tensor] = []
        # Per-pixel statistics of the anomaly map on normal parts (see afrd.model.mapnorm):
        # identity (0, 1) until fitted; checkpoints from before they existed load as identity.
        self.register_buffer("map_mean", torch.zeros(image_size, image_size))
        self.register_buffer("map_std", torch.ones(image_size, image_size))
        self._register_load_state_dict_pre_hook(self._default_map_stats)

    def _default_map_stats(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for name, buf in (("map_mean", self.map_mean), ("map_std", self.map_std)):
            state_dict.setdefault(
                prefix + name, torch.zeros_like(buf) if name == "map_mean" else torch.ones_like(buf)
            )

    def teacher_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-light teacher maps [B, n, C, h, w] (n = 1 for single:K, else N)."""
        if self.light is not None:
            x = x[:, self.light : self.light + 1]
        n = x.shape[1]
        with torch.no_grad():
            feats = self.teacher(x.flatten(0, 1))
        return [f.unflatten(0, (-1, n)) for f in feats]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.restore(self.teacher_features(x))

    def restore(
        self, per_light: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``forward`` after the teacher: from per-light maps (as ``teacher_features`` returns
        them) to ``(target, student)``. Training on cached teacher features enters here."""
        fused, weights = self.fusion(per_light)
        self.last_fusion_weights = [w.detach() for w in weights]
        code = self.bottleneck(fused)
        if self.views > 1:
            code = (code[:, None] + self.light_embed[None]).flatten(0, 1)
            target = [f.flatten(0, 1) for f in per_light]
        else:
            target = fused
        return target, self.decoder(code)

    def loss(self, per_light: list[torch.Tensor], kind: str = "pixel") -> torch.Tensor:
        """What ``afrd train`` minimises on per-light teacher maps: the distillation loss
        (``kind``: afrd.model.scoring.LOSSES); CAD and DCAM add their own terms."""
        teacher, student = self.restore(per_light)
        return distillation_loss(kind, teacher, student)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @classmethod
    def from_config(cls, config: dict, teacher_weights: str | None = "random") -> AFRD:
        """Shaped for a checkpoint's config (random teacher: the state dict brings the weights)."""
        return cls(
            teacher=config["teacher"],
            fusion=config["fusion"],
            n_lights=len(config["lights"]),
            image_size=int(config["image_size"]),
            teacher_weights=teacher_weights,
        )

    def config(self) -> dict:
        """Constructor arguments (with the weights' source) as stored in checkpoints."""
        return {
            "teacher": self.teacher_name,
            "fusion": self.fusion_name,
            "n_lights": self.n_lights,
            "image_size": self.image_size,
            "teacher_weights_source": self.teacher_weights_source,
        }
