"""DCAM: one student for many products (Jena et al., "Attend, Distill, Detect: Attention-aware
Entropy Distillation for Anomaly Detection", 2024, arXiv 2405.06467).

A student trained on several products at once suffers "cross-class interference": it must
restore every product's features from one code and restores each worse. The paper's remedy,
kept to training so inference costs nothing:

- distributed convolutional attention modules (DCAM, §3.2): one convolutional attention block
  on the student's feature map at every scale of the pyramid. Each is CBAM-like: channel
  attention, sigmoid(MLP(avg-pool) + MLP(max-pool)), and (``mode="cbam"``) spatial attention,
  sigmoid(conv7x7([mean, max] over channels)); the paper's best configuration is channel
  attention alone (``mode="channel"``, the default here). The block re-weights the student's
  map per part, so the distillation signal concentrates on what matters for that part;
- the two losses (§3.3): a channel-wise cosine distance (per position, 1 - cos over channels,
  averaged: AFRD eq. 5) and a KL divergence over the spatial dimension (per channel, softmax of
  the map over its h*w positions, KL(teacher || student), times tau^2), between teacher and
  attended student maps;
- multi-scale feature matching: both losses at every scale of the pyramid (stride 4, 8, 16).

Where this deviates, and why: the student is this project's (the fused multi-light teacher,
RD's bottleneck and reversed decoder), not the paper's STFPM student. The losses are also taken
on the raw student maps (the multi-class baseline's terms), because the modules are dropped at
inference and the raw map is what is scored; the paper's text available to us does not say
whether its baseline terms are kept. Checkpoints carry the modules (``--resume``), loading for
inference or export drops them (``inference_state``), so the bundle's graph is the naive
multi-class one node for node. The spatial KL is weighted 0.01 by default: on this project's
teacher maps it starts about 7x the cosine terms, and at weight 1 it drove training (DCAM
closed -5 % of the naive-to-one-class gap); at 0.01 it closed 67 % (bench/multiclass.py,
BENCHMARKS.md). The same losses without the blocks (``blocks=False``) closed 75 %: on this
data the gain is the loss pair, not the attention.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from afrd.errors import ConfigError
from afrd.model.network import AFRD
from afrd.model.scoring import loss_pixel

MODES = ("channel", "cbam")
PREFIX = "dcam."  # state-dict keys of the training-only modules


class ConvAttention(nn.Module):
    """One DCAM block: [B, C, h, w] -> the same map re-weighted by its attention (CBAM form)."""

    def __init__(self, channels: int, mode: str = "channel", reduction: int = 4) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"DCAM mode must be one of {MODES}, got {mode!r}")
        hidden = max(8, channels // reduction)
        self.mode = mode
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Conv2d(2, 1, 7, padding=3) if mode == "cbam" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        if self.spatial is not None:
            pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
            x = x * torch.sigmoid(self.spatial(pooled))
        return x


def spatial_kl(t: torch.Tensor, s: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of the maps as distributions over the h*w positions, per channel
    (softmax with temperature ``tau``), averaged over channels and batch, times tau^2."""
    logp_t = F.log_softmax(t.flatten(2) / tau, dim=-1)
    logp_s = F.log_softmax(s.flatten(2) / tau, dim=-1)
    return (logp_t.exp() * (logp_t - logp_s)).sum(-1).mean() * tau * tau


def dcam_loss(
    teacher: Sequence[torch.Tensor],
    student: Sequence[torch.Tensor],
    kl_weight: float = 1.0,
    tau: float = 1.0,
) -> torch.Tensor:
    """Multi-scale matching: channel cosine distance + kl_weight * spatial KL at every scale."""
    kl = sum(spatial_kl(t, s, tau) for t, s in zip(teacher, student, strict=True))
    return loss_pixel(list(teacher), list(student)) + kl_weight * kl


class DCAMStudent(AFRD):
    """AFRD whose training adds the DCAM blocks (``self.dcam``, one per student scale) and their
    losses; ``forward``/``restore`` and everything exported are AFRD's own."""

    def __init__(
        self,
        teacher: str = "wide_resnet50_2",
        fusion: str = "attention",
        n_lights: int = 6,
        image_size: int = 256,
        teacher_weights: str | os.PathLike | None = None,
        mode: str = "channel",
        kl_weight: float = 0.01,
        tau: float = 1.0,
        blocks: bool = True,
    ) -> None:
        super().__init__(teacher, fusion, n_lights, image_size, teacher_weights)
        self.mode, self.kl_weight, self.tau = mode, float(kl_weight), float(tau)
        # blocks=False: the losses alone, no attention (the ablation bench/multiclass.py runs)
        chans = self.teacher.channels if blocks else ()
        self.dcam = nn.ModuleList(ConvAttention(c, mode) for c in chans)

    def loss(self, per_light: list[torch.Tensor], kind: str = "pixel") -> torch.Tensor:
        """Baseline terms on the raw student maps + the same terms on the attended maps."""
        target, student = self.restore(per_light)
        loss = dcam_loss(target, student, self.kl_weight, self.tau)
        if not len(self.dcam):
            return loss
        attended = [block(s) for block, s in zip(self.dcam, student, strict=True)]
        return loss + dcam_loss(target, attended, self.kl_weight, self.tau)

    def config(self) -> dict:
        return {
            **super().config(),
            "dcam": {"mode": self.mode, "kl_weight": self.kl_weight, "tau": self.tau},
        }


def inference_state(state: dict) -> dict:
    """A checkpoint's state without the DCAM blocks: what inference and export load."""
    return {k: v for k, v in state.items() if not k.startswith(PREFIX)}
