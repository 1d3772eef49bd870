"""CAD: Contextual Affinity Distillation (Zhang, Suganuma, Okatani, WACV 2024, arXiv 2307.03101).

What the sources reachable to us say (the arXiv and WACV abstracts, and the authors' lab's
summary page, vision.is.tohoku.ac.jp/?lang=en&p=783; the method section was not reachable and
no official code is public, see the fidelity notes of issue 14):
- reverse distillation (an ImageNet teacher, e.g. WideResNet-50, trained on normal images only)
  with "two students (local and global) to better mimic the teacher's local and global
  behavior" (WACV abstract);
- the local student is the one "used in previous studies", trained with the cosine similarity
  loss on the feature maps of several teacher layers (lab page): here AFRD's (RD's one-class
  bottleneck and reversed decoder, per-pixel cosine loss, AFRD eq. 5); its map catches
  structural defects;
- the global student "pays attention to learning global correlations"; its GCCB "compresses
  the teacher network's high-level features along the channel dimension to extract crucial
  contextual data" (lab page): here the GCCB condenses the channels of the teacher's stride-16
  (highest) fused map and lets every position gather context from every other, and the global
  student decodes from that alone (``GlobalStudent``);
- a "contextual affinity loss for the student training and anomaly scoring" (abstract); the
  lab page's summary breaks off at "the global student evaluates the cosine similarity between
  the ...". Our reading: the cosine similarity of every position's feature with every other
  position's (the affinity matrix A = F^T F of channel-normalised features, [hw, hw]) must match
  the teacher's; a part whose components are right locally but wrong together (missing, extra,
  moved, swapped, recoloured) changes those affinities, so the per-position discrepancy
  mean_j |A^T_ij - A^S_ij| is the global anomaly map. The global student is trained with the
  cosine loss plus this affinity loss.

Where this is our reading, not the sources' text, and why:
- GCCB's inner layout (1x1 condensing by ``reduction``, non-local attention, residual) and the
  global student's layout after it (one strided bottleneck block to a stride-32 code, RD's
  decoder) are not in the sources.
- The affinity formula and its scales: taken at stride 8 and 16 by default, because at stride 4
  the matrix is (H/4)^4 entries per part, which a CPU cell cannot afford at 256 px.
- The global student reads the fused teacher maps *detached*, so the local student trains
  exactly as AFRD's does (same seed, same weights) and adding the global student can only change
  the result through the combined map. Whether the paper shares anything is unknown to us.
- The combined map: each student's map is z-scored per pixel against held-out normal parts
  (afrd.model.mapnorm's statistics, one pair per student), then summed (``sum``) or maxed
  (``max``); the image score is its maximum. The sources do not say how the paper combines them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from afrd.errors import ConfigError
from afrd.model.distill.decoder import DECODER_LAYOUT, Bottleneck, ReverseDecoder
from afrd.model.distill.network import AFRD
from afrd.model.inference import IMAGENET_MEAN, IMAGENET_STD
from afrd.model.scoring import AnomalyScorer, distillation_loss

KIND = "cad"
STUDENTS = ("local", "local+global")
COMBINES = ("sum", "max")
LAYOUT = "gccb-on-teacher-high-level"  # the global student's; checkpoints name theirs
AFFINITY_SCALES = (1, 2)  # teacher scales (0, 1, 2 = stride 4, 8, 16) the affinity is taken at


class GCCB(nn.Module):
    """Global context condensing block: the teacher's high-level map [B, C, h, w] -> a
    condensed map [B, width, h, w] that carries the whole part's context.

    The channels are condensed (1x1 conv + BN + ReLU, C -> width = max(16, C // reduction));
    every position then attends to every position (1x1 query/key/value, softmax over the h*w
    keys scaled by sqrt(width)) and the gathered context is added back (1x1 conv + BN,
    residual, ReLU)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        width = max(16, channels // reduction)
        self.width = width
        self.condense = nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.query = nn.Conv2d(width, width, 1)
        self.key = nn.Conv2d(width, width, 1)
        self.value = nn.Conv2d(width, width, 1)
        self.expand = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.condense(x)
        h, w = y.shape[2:]
        q, k, v = (m(y).flatten(2) for m in (self.query, self.key, self.value))  # [B, w', hw]
        att = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(self.width), dim=-1)  # [B, hw, hw]
        ctx = (v @ att.transpose(1, 2)).unflatten(2, (h, w))
        return F.relu(y + self.expand(ctx))


class GlobalStudent(nn.Module):
    """The teacher's high-level (stride 16) map condensed by the GCCB, taken to a stride-32
    code as wide as the local student's, then RD's reversed decoder back to the teacher's three
    scales (stride 4, 8, 16). It never sees the low-level maps: it restores them from the
    part's context, which is what a local student's skip of detail cannot do."""

    def __init__(self, teacher: str, channels: tuple[int, int, int], reduction: int = 4) -> None:
        super().__init__()
        lay = DECODER_LAYOUT[teacher]
        self.gccb = GCCB(channels[2], reduction)
        code = 2 * channels[2]  # the width of the local student's bottleneck code
        self.code = Bottleneck(self.gccb.width, lay["bottleneck_width"], code, stride=2)
        self.decoder = ReverseDecoder(code, channels, lay["widths"], lay["blocks"])

    def forward(self, fused: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder(self.code(self.gccb(fused[2])))


def affinity(f: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, hw, hw]: cosine similarity of every position's feature with every
    position's (our reading of the contextual affinity)."""
    f = f.flatten(2)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return f.transpose(1, 2) @ f


def affinity_map(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """[B, h, w]: per position, the mean absolute difference of its affinity row (teacher vs
    student) over all positions; the global student's anomaly map at one scale."""
    b, _, h, w = teacher.shape
    diff = (affinity(teacher) - affinity(student)).abs().mean(dim=-1)
    return diff.view(b, h, w)


def affinity_loss(
    teacher: Sequence[torch.Tensor],
    student: Sequence[torch.Tensor],
    scales: Sequence[int] = AFFINITY_SCALES,
) -> torch.Tensor:
    """Contextual affinity loss: mean of ``affinity_map`` over positions, summed over scales."""
    return sum(affinity_map(teacher[s], student[s]).mean() for s in scales)


class CAD(AFRD):
    """AFRD's local student plus the global student (``student="local+global"``).

    ``forward``/``restore`` stay AFRD's (teacher, local student), so everything written for the
    local student (feature cache, map statistics of the local map) works unchanged; ``maps``
    gives both students' blurred raw maps and ``afrd.model.cad.inference.CADInference`` the
    combined, exported function.
    """

    kind = KIND

    def __init__(
        self,
        teacher: str = "wide_resnet50_2",
        fusion: str = "attention",
        n_lights: int = 6,
        image_size: int = 256,
        teacher_weights: str | os.PathLike | None = None,
        affinity_weight: float = 1.0,
        affinity_scales: Sequence[int] = AFFINITY_SCALES,
        combine: str = "sum",
        reduction: int = 4,
    ) -> None:
        super().__init__(teacher, fusion, n_lights, image_size, teacher_weights)
        if self.views != 1:
            raise ConfigError(
                "--student local+global needs a fused map: fusion restore-max has none"
            )
        scales = tuple(sorted({int(s) for s in affinity_scales}))
        if not scales or any(s not in (0, 1, 2) for s in scales):
            raise ConfigError(f"CAD affinity scales must be of 0, 1, 2, got {affinity_scales}")
        if combine not in COMBINES:
            raise ConfigError(f"CAD combine must be one of {COMBINES}, got {combine!r}")
        self.affinity_weight, self.affinity_scales = float(affinity_weight), scales
        self.combine, self.reduction = combine, int(reduction)
        self.global_student = GlobalStudent(teacher, self.teacher.channels, reduction)
        size = (image_size, image_size)
        self.register_buffer("global_mean", torch.zeros(size))
        self.register_buffer("global_std", torch.ones(size))
        self.scorer = AnomalyScorer(image_size, 1)  # local map: AFRD's, blur buffers only

    def students(self, per_light: list[torch.Tensor]) -> tuple[list, list, list]:
        """(fused teacher maps, local student, global student) from per-light teacher maps."""
        target, local = self.restore(per_light)
        return target, local, self.global_student([f.detach() for f in target])

    def loss(self, per_light: list[torch.Tensor], kind: str = "pixel") -> torch.Tensor:
        """Local cosine loss + global cosine loss + weight * contextual affinity loss. The
        global terms see the fused target detached: only the local loss trains the fusion."""
        target, local, glob = self.students(per_light)
        fixed = [f.detach() for f in target]
        aff = affinity_loss(fixed, glob, self.affinity_scales)
        return (
            distillation_loss(kind, target, local)
            + distillation_loss(kind, fixed, glob)
            + self.affinity_weight * aff
        )

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet-normalised [B, N, 3, H, W] -> blurred raw (local, global) maps [B, H, W]."""
        target, local, glob = self.students(self.teacher_features(x))
        size = (self.image_size, self.image_size)
        local_map = self.scorer.raw_map(target, local)
        gmap = None
        for s in self.affinity_scales:
            d = affinity_map(target[s], glob[s])[:, None]
            d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
            gmap = d[:, 0] if gmap is None else gmap + d[:, 0]
        return self.scorer.blur(local_map), self.scorer.blur(gmap)

    @torch.no_grad()
    def fit_map_stats(self, arrays: Sequence, floor_quantile: float = 0.9) -> dict:
        """Per-pixel mean/std of both students' maps on held-out normal sets (uint8
        [N, H, W, 3] arrays), smoothed and floored as afrd.model.mapnorm does for AFRD."""
        was = self.training
        self.eval()
        dev = self.map_mean.device
        mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD, device=dev).view(1, 1, 3, 1, 1) * 255.0
        loc, glo = [], []
        for i in range(0, len(arrays), 8):
            x = torch.from_numpy(np.stack(arrays[i : i + 8])).to(dev)
            lm, gm = self.maps((x.permute(0, 1, 4, 2, 3).float() - mean) / std)
            loc.append(lm)
            glo.append(gm)
        info = {"sets": len(arrays)}
        for name, maps, mbuf, sbuf in (
            ("local", torch.cat(loc), self.map_mean, self.map_std),
            ("global", torch.cat(glo), self.global_mean, self.global_std),
        ):
            m = self.scorer.blur(maps.mean(0, keepdim=True))[0]
            s = self.scorer.blur(maps.std(0, keepdim=True))[0]
            floor = torch.quantile(s.flatten(), floor_quantile).clamp_min(1e-6)
            mbuf.copy_(m)
            sbuf.copy_(s.clamp_min(floor))
            info[f"{name}_std_floor"] = float(floor)
        self.train(was)
        return info

    def config(self) -> dict:
        return {
            **super().config(),
            "model_kind": KIND,
            "student": "local+global",
            "cad": {
                "affinity_weight": self.affinity_weight,
                "affinity_scales": list(self.affinity_scales),
                "combine": self.combine,
                "reduction": self.reduction,
                "layout": LAYOUT,
            },
        }

    @classmethod
    def from_config(cls, config: dict, teacher_weights: str | None = "random") -> CAD:
        c = config.get("cad")
        if not isinstance(c, dict):
            raise ConfigError("CAD checkpoint config misses its 'cad' section")
        if c.get("layout") != LAYOUT:
            raise ConfigError(
                f"CAD checkpoint has global-student layout {c.get('layout', 'gccb-per-stage')!r}; "
                f"this afrd builds {LAYOUT!r} (GCCB on the teacher's high-level map): retrain it "
                "with afrd train --student local+global"
            )
        return cls(
            teacher=config["teacher"],
            fusion=config["fusion"],
            n_lights=len(config["lights"]),
            image_size=int(config["image_size"]),
            teacher_weights=teacher_weights,
            affinity_weight=float(c["affinity_weight"]),
            affinity_scales=c["affinity_scales"],
            combine=c["combine"],
            reduction=int(c["reduction"]),
        )
