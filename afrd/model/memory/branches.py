"""The memory bank with global branches (issue 27; ``afrd train --preset logical``, or
``--memory-global position,histogram``): the bank's map, normalised on held-out normal parts,
and the maps of the global branches of afrd.model.globalstats (per-position Gaussians, per-half
counts of rare component prototypes), each normalised on the same parts, fused by a maximum.

Why a subclass of the bank, inside one graph: the branches read the bank's own teacher features
at its first (finest) scale, so the part costs one teacher pass per scale, and the bundle, the
daemon and every engine run it as they run any model. The branches' operators are MatMul,
Softmax, ReduceMin/Max, Gather, Sqrt and a nearest Resize: what TensorRT runs as well as ONNX
Runtime. Settings: ``globalstats.BranchSettings`` (what bench/logical.py chose); the fit is
``fit_branches``, called by ``afrd.model.memory.fit.train_memory`` after the bank's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from afrd.errors import ConfigError
from afrd.model.globalstats import BRANCHES, BranchSettings, GlobalBranches, robust_norm
from afrd.model.memory.bank import MemoryBank
from afrd.model.memory.extract import Features


def parse_branches(value: Sequence[str] | str) -> tuple[str, ...]:
    """``position,histogram`` (or a sequence) -> the branch names, checked."""
    names = tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value))
    names = tuple(v for v in names if v)
    if any(v not in BRANCHES for v in names) or len(set(names)) < len(names):
        raise ConfigError(
            f"global branches must be distinct names of {', '.join(BRANCHES)}, got "
            f"{','.join(names) or 'nothing'}"
        )
    return names


class BankWithBranches(MemoryBank):
    """``MemoryBank`` whose map is max(bank map normalised on held-out parts, the branches'
    normalised maps brought to the input size); the score is the same maximum of the image
    scores (the map's maximum when the bank scores by ``max``). Both normalised by
    ``robust_norm`` (median, MAD) of the held-out image scores, the branches less their margin
    (why: ``GlobalBranches``)."""

    def __init__(
        self, *args, branches: Sequence[str] = BRANCHES, settings: dict | None = None, **kw
    ) -> None:
        super().__init__(*args, **kw)
        self.branches = GlobalBranches(branches, BranchSettings(**(settings or {})))
        self.register_buffer("bank_norm", torch.tensor([0.0, 1.0]))  # centre, scale on held-out
        self._finest: torch.Tensor | None = None

    def patches(self, images: torch.Tensor, head: int = 0) -> torch.Tensor:
        f = super().patches(images, head)
        if head == 0:  # the branches read the bank's own pass (forward), not a second one;
            self._finest = f  # one forward at a time per model, as every engine runs it
        return f

    def bank_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank alone: (map, score) as a plain MemoryBank gives them."""
        return super().forward(images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap, score = super().forward(images)
        feats, self._finest = self._finest, None
        mean, std = self.bank_norm[0], self.bank_norm[1]
        maps, scores = self.branches(feats)  # [B, R, g, g], [B, R]
        size = (self.image_size, self.image_size)
        # nearest: every input pixel takes its patch's value, so the maximum is kept exactly
        up = F.interpolate(maps, size=size, mode="nearest").amax(1)
        fused = torch.maximum((amap - mean) / std, up)
        score = torch.maximum((score - mean) / std, scores.amax(1))
        return fused.float(), score.float()

    def config(self) -> dict:
        g = self.branches
        return {**super().config(), "global": {"branches": list(g.names), **g.settings.to_dict()}}

    @classmethod
    def from_config(cls, config: dict, teacher_weights: str | None = "random") -> MemoryBank:
        model = super().from_config(config, teacher_weights)
        g = dict(config["global"])
        g.setdefault("margin", 0.0)  # checkpoints from before the margin fused without one
        names = parse_branches(g.pop("branches"))
        model.branches = GlobalBranches(names, BranchSettings(**g))
        return model


@torch.no_grad()
def fit_branches(
    model: BankWithBranches,
    arrays: Sequence[np.ndarray],
    held: Sequence[np.ndarray],
    batch: int,
    seed: int,
    features: Features,
) -> dict:
    """Fit ``model``'s branches on the training ``arrays`` (their finest-scale features from
    ``features``) and normalise them and the bank on the ``held`` normal arrays (the bank's
    own eager pass: its scores and features at once)."""
    train = torch.cat([features(x)[0] for x in _batches(arrays, batch)])
    scores, feats = [], []
    for x in _batches(held, batch):
        scores.append(model.bank_forward(x)[1])
        feats.append(model._finest)
    scores_t = torch.cat(scores)
    model.bank_norm = robust_norm(scores_t)
    info = model.branches.fit(train, torch.cat(feats), seed)
    return {**info, "bank_norm": model.bank_norm.tolist()}


def _batches(arrays: Sequence[np.ndarray], batch: int):
    for i in range(0, len(arrays), batch):
        yield torch.from_numpy(np.stack(arrays[i : i + batch]))
