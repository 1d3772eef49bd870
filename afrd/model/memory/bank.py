"""The multi-light memory bank: a training-free detector on the frozen teacher's features.

Per light, every patch of a part is described by the teacher's mid-level maps, averaged over
its neighbourhood (PatchCore's "locally aware" features) and brought to one resolution; its
anomaly is the distance to the nearest patch in that light's memory bank (a coreset of the
normal training patches). Each light's distance map is normalised by how that light's maximum
varies on held-out normal parts, so a light whose features are naturally noisier does not
dominate, then the lights are fused by a maximum (a defect seen under one light only is not
diluted by the five that do not show it), upsampled, blurred and scored.

Scales: the teacher may look at the part more than once, at the input size and at fractions of
it (``scales`` = downsampling factors). Each scale has its own banks and normalisation; the
blurred maps of all scales meet in one maximum. Why: a fixed-size teacher sees small, shallow
defects only at full resolution and large, low-contrast ones only when the part is smaller
(bench/fusion.py, BENCHMARKS.md: two scales beat either alone).

``MemoryBank`` is its own inference module: uint8 [B, N, H, W, 3] in, (map [B, H, W], score
[B]) out, with the banks inside as constants, so the ONNX graph is the whole function, as for
``afrd.model.inference.InferenceModel``. Fitting lives in ``afrd.model.memory.fit``.
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
PRECISION_FLOOR = 1e-3  # of the mean |b|^2: squared distances below it are rounding (distances)


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


class ScaleBank(nn.Module):
    """One input scale's state: per-light banks [N, K, dim] (with squared norms), the part's
    region, the patch coordinates (used when ``position`` > 0) and the per-light
    normalisation.

    The region (issue 23): with parts registered to the reference pose, a patch outside every
    training part's silhouette (dilated) can only ever show background. Such patches are
    searched among the last ``bg_count`` rows of the bank alone (the background's own small
    coreset), the others among all rows: a part's patches cost the search, the background
    almost nothing, and a foreign object on the background still stands out. A bank without a
    region (all patches in it, ``bg_count`` 0: every checkpoint before issue 23) searches
    every patch in every row, as before."""

    def __init__(self, factor: int, size: int, stride: int, n_lights: int, dim: int) -> None:
        super().__init__()
        self.factor, self.size, self.grid = factor, size, size // stride
        self.register_buffer("bank", torch.zeros(n_lights, 1, dim))
        self.register_buffer("bank_sq", torch.zeros(n_lights, 1))
        self.register_buffer("region", torch.ones(self.grid * self.grid, dtype=torch.bool))
        self.register_buffer("bg_count", torch.zeros((), dtype=torch.int64))
        # (row, column) in [0, 1] times the fitted scale; used only when position > 0
        self.register_buffer("coords", torch.zeros(self.grid * self.grid, 2))
        # per light: mean and std of the maximum of its raw map on held-out normal parts
        self.register_buffer("light_mean", torch.zeros(n_lights))
        self.register_buffer("light_std", torch.ones(n_lights))
        self._derive()

    @property
    def bank_size(self) -> int:
        return int(self.bank.shape[1])

    def set_bank(self, bank: torch.Tensor, region: torch.Tensor | None = None, bg: int = 0) -> None:
        """Install per-light banks [N, K, dim] (replaces the buffer: K may change); ``region``
        [grid^2] bool marks the patches searched in all K rows, the others search the last
        ``bg`` rows only (None: every patch in every row)."""
        n, dim = self.bank.shape[0], self.bank.shape[2]
        if bank.ndim != 3 or bank.shape[0] != n or bank.shape[2] != dim:
            raise ConfigError(f"memory bank must be [{n}, K, {dim}], got {tuple(bank.shape)}")
        if not 0 <= bg < bank.shape[1]:
            raise ConfigError(f"memory bank: {bg} background rows of {bank.shape[1]}")
        if region is None:
            region = torch.ones(self.grid * self.grid, dtype=torch.bool)
        if region.shape != (self.grid * self.grid,) or not bool(region.any()):
            raise ConfigError(f"memory region must be [{self.grid**2}] with a patch in it")
        self.bank = bank.to(self.bank).contiguous()
        self.bank_sq = (self.bank**2).sum(-1)
        self.region = region.to(device=self.region.device, dtype=torch.bool)
        self.bg_count = torch.tensor(int(bg), device=self.bg_count.device)
        self._derive()

    def _derive(self) -> None:
        """What the search reads, derived from the stored state (constants in the graph): the
        bank as one matrix product's operand [N, dim + 1, K] (rows -2 b, then |b|^2, so a
        query [q, 1] gives |b|^2 - 2 q.b in one product: 1.8x faster than three passes over
        the [Q, K] distances), the floor, and the patch order of the region split."""
        aug = torch.cat([-2 * self.bank, self.bank_sq[..., None]], -1).transpose(1, 2)
        self.register_buffer("bank_t", aug.contiguous(), persistent=False)
        floor = self.bank_sq.mean(1) * PRECISION_FLOOR
        self.register_buffer("floor_sq", floor[None, :, None], persistent=False)
        self._bg = int(self.bg_count)
        self._split = bool(self._bg > 0 and not self.region.all())
        inside, outside = self.region.nonzero()[:, 0], (~self.region).nonzero()[:, 0]
        order = torch.cat([inside, outside]).argsort()  # back from [inside, outside] to the grid
        self.register_buffer("inside", inside, persistent=False)
        self.register_buffer("outside", outside, persistent=False)
        self.register_buffer("order", order, persistent=False)

    def set_position_scale(self, scale: float) -> None:
        """Coordinates times ``scale`` (feature units); the fit sets it from the features."""
        g = torch.linspace(0.0, 1.0, self.grid)
        yy, xx = torch.meshgrid(g, g, indexing="ij")
        self.coords = torch.stack([yy, xx], -1).reshape(-1, 2).to(self.coords) * float(scale)

    def distances(self, q: torch.Tensor) -> torch.Tensor:
        """Patch features [B, N, Q, dim] -> nearest-neighbour distances [B, N, grid, grid].

        |q|^2 - 2 q.b + |b|^2 (one matrix product) leaves a squared distance near zero to
        rounding, which the square root magnifies: engines disagreed by 0.02 on patches that
        match a bank patch almost exactly (export parity failed). Squared distances under
        ``PRECISION_FLOOR`` x the bank's mean |b|^2 read as that floor, the same in every
        engine; real parts' nearest distances lie far above it (a cookie bank at 256 px: floor
        1.8, the smallest nearest distance of its held-out parts 6.2)."""
        if self._split:
            part = nearest_sq(q.index_select(2, self.inside), self.bank_t)
            rest = nearest_sq(q.index_select(2, self.outside), self.bank_t[..., -self._bg :])
            best = torch.cat([part, rest], 2).index_select(2, self.order)
        else:
            best = nearest_sq(q, self.bank_t)
        return torch.maximum(best, self.floor_sq).sqrt().unflatten(-1, (self.grid, self.grid))

    def normalised(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.light_mean[:, None, None]) / self.light_std[:, None, None]

    def _load_from_state_dict(self, state: dict, prefix: str, *args, **kwargs) -> None:
        # the bank's size is the fit's: take it from the state loaded; a bank from before
        # issue 23 has no region (every patch searched in every row)
        bank = state.get(prefix + "bank")
        if isinstance(bank, torch.Tensor) and bank.ndim == 3:
            self.bank = self.bank.new_zeros(bank.shape)
            self.bank_sq = self.bank_sq.new_zeros(bank.shape[:2])
            state.setdefault(prefix + "region", torch.ones_like(self.region))
            state.setdefault(prefix + "bg_count", torch.zeros_like(self.bg_count))
        super()._load_from_state_dict(state, prefix, *args, **kwargs)
        self._derive()


def nearest_sq(q: torch.Tensor, bank_t: torch.Tensor) -> torch.Tensor:
    """Squared distance [B, N, Q] of each query [B, N, Q, dim] to its nearest bank row, from
    the augmented bank [N, dim + 1, K] (ScaleBank._derive), ``DISTANCE_CHUNK`` rows a product
    (the [Q, chunk] block stays in cache: faster than one product over all K)."""
    q_sq = (q * q).sum(-1)
    qa = F.pad(q, (0, 1), value=1.0)  # [q, 1]; a Pad keeps the batch dynamic in every exporter
    best = None
    for start in range(0, bank_t.shape[-1], DISTANCE_CHUNK):  # static: unrolled in ONNX
        m = torch.matmul(qa, bank_t[..., start : start + DISTANCE_CHUNK]).amin(-1)
        best = m if best is None else torch.minimum(best, m)
    return best + q_sq


# state dict keys of a single-scale checkpoint written before scales existed
_LEGACY_KEYS = ("bank", "bank_sq", "coords", "light_mean", "light_std")


class MemoryBank(nn.Module):
    """Frozen teacher per light and scale -> patch features -> nearest-neighbour distance to
    that light's bank -> per-light normalisation -> maximum over lights -> upsampling and blur
    per scale -> maximum over scales -> image score.

    ``layers`` are teacher scales (0, 1, 2 = strides 4, 8, 16), each averaged over its
    ``pool`` x ``pool`` neighbourhood, then brought to one grid of patches ``stride`` pixels
    apart (8 measured as good as 4 at 128 px, with 4x fewer patches to search). ``scales`` are
    input downsampling factors (1 = the input as it is, 2 = half its size: a box filter in the
    graph). ``position`` > 0 appends the patch's (row, column), scaled, to its feature, so the
    nearest neighbour must also lie near the same place of the part (for fixtured or
    registered parts: catches a component in the wrong place). Banks, squared norms and
    normalisation are buffers, so checkpoints and ONNX carry them.
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
        position: float = 0.0,
        fusion: str = "max",
        score: str = "max",
        sigma: float = 4.0,
        teacher_weights: str | os.PathLike | None = None,
        scales: Sequence[int] = (1,),
    ) -> None:
        super().__init__()
        layers = tuple(int(v) for v in layers)
        if not layers or any(v not in (0, 1, 2) for v in layers) or len(set(layers)) < len(layers):
            raise ConfigError(f"memory layers must be distinct scales of 0, 1, 2, got {layers}")
        if fusion not in FUSIONS:
            raise ConfigError(f"memory fusion must be one of {FUSIONS}, got {fusion!r}")
        if pool < 1 or pool % 2 == 0:
            raise ConfigError(f"memory pool must be an odd size >= 1, got {pool}")
        if n_lights < 1:
            raise ConfigError(f"memory needs n_lights >= 1, got {n_lights}")
        if image_size % 32 or image_size < 32:
            raise ConfigError(f"image_size must be a multiple of 32 and >= 32, got {image_size}")
        if stride not in (4, 8, 16):
            raise ConfigError(f"memory stride must be 4, 8 or 16 pixels, got {stride}")
        self.scales = check_scales(scales, image_size)
        self.topk = parse_score(score)
        if self.topk > image_size * image_size:
            raise ConfigError(f"memory score {score!r}: K exceeds the {image_size}^2 map pixels")
        self.teacher_name, self.n_lights, self.image_size = teacher, n_lights, image_size
        self.layers, self.pool, self.position = tuple(sorted(layers)), pool, float(position)
        self.fusion_name, self.score_name, self.sigma = fusion, score, sigma
        self.stride = stride
        self.teacher, self.teacher_weights_source = build_teacher(teacher, teacher_weights)
        feat_dim = sum(self.teacher.channels[i] for i in self.layers)
        self.dim = feat_dim + (2 if self.position > 0 else 0)
        self.blur = GaussianBlur(sigma)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) * 255.0)
        self.heads = nn.ModuleList(
            ScaleBank(f, image_size // f, stride, n_lights, self.dim) for f in self.scales
        )
        self._register_load_state_dict_pre_hook(_legacy_state)

    def patches(self, images: torch.Tensor, head: int = 0) -> torch.Tensor:
        """uint8 [B, N, H, W, 3] -> patch features [B, N, Q, dim] at scale ``head`` (Q =
        grid^2 of that scale, row-major)."""
        b, n = images.shape[0], images.shape[1]
        h = self.heads[head]
        x = ((images.permute(0, 1, 4, 2, 3).float() - self.mean) / self.std).flatten(0, 1)
        if h.factor > 1:
            x = F.avg_pool2d(x, h.factor)
        with torch.no_grad():
            feats = self.teacher(x)
        size = (h.grid, h.grid)
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
            f = torch.cat([f, h.coords.expand(b, n, -1, -1)], -1)
        return f

    def raw_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 [B, N, H, W, 3] -> per scale, per-light nearest-neighbour distances
        [B, N, grid, grid]."""
        return [h.distances(self.patches(images, i)) for i, h in enumerate(self.heads)]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = (self.image_size, self.image_size)
        amap = None
        for h, raw in zip(self.heads, self.raw_maps(images), strict=True):
            z = h.normalised(raw)
            fused = z.amax(1) if self.fusion_name == "max" else z.mean(1)
            # blurred at the scale's own size (the same sigma in that scale's pixels), then
            # brought to the input size
            m = F.interpolate(fused[:, None], size=(h.size, h.size), mode="bilinear")
            m = self.blur(m[:, 0])[:, None]
            if h.size != self.image_size:
                m = F.interpolate(m, size=out, mode="bilinear", align_corners=False)
            amap = m[:, 0] if amap is None else torch.maximum(amap, m[:, 0])
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
                "scales": list(self.scales),
                "bank_sizes": [h.bank_size for h in self.heads],
                "position": self.position,
                "score": self.score_name,
                "sigma": self.sigma,
            },
        }

    @classmethod
    def from_config(cls, config: dict, teacher_weights: str | None = "random") -> MemoryBank:
        """Shaped for a checkpoint's config (random teacher: the state dict brings the weights
        and the banks, whose sizes the state dict sets)."""
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
            position=float(m["position"]),
            fusion=config["fusion"],
            score=m["score"],
            sigma=float(m["sigma"]),
            teacher_weights=teacher_weights,
            scales=m.get("scales", (1,)),
        )


def check_scales(scales: Sequence[int], image_size: int) -> tuple[int, ...]:
    """Distinct downsampling factors, each leaving a size the teacher takes (a multiple of 32)."""
    try:
        out = tuple(int(f) for f in scales)
    except (TypeError, ValueError):
        out = ()
    if not out or len(set(out)) < len(out) or any(f < 1 for f in out):
        raise ConfigError(f"memory scales must be distinct factors >= 1, got {list(scales)}")
    bad = [f for f in out if image_size % f or (image_size // f) % 32]
    if bad:
        raise ConfigError(
            f"memory scales {bad}: image_size {image_size} divided by each factor must be a "
            "multiple of 32 (e.g. scales 1,2 at 256 px: 256 and 128)"
        )
    return out


def _legacy_state(state: dict, prefix: str, *_args) -> None:
    """A single-scale checkpoint from before scales: its buffers are head 0's."""
    for key in _LEGACY_KEYS:
        if prefix + key in state:
            state[f"{prefix}heads.0.{key}"] = state.pop(prefix + key)
