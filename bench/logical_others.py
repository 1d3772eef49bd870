"""The other global methods of issue 27 on the logical family, for bench/logical.py ``--others``.

- ``cad``: CAD as built (afrd.model.cad, our reading of the paper: its method text is not
  reachable here), trained as bench/cad.py trains it (the ``afrd-cpu`` AFRD settings at 128 px,
  ``--student local+global``) on the family's train split, normalised on its val split; scored
  by the local student alone, the global student alone and their sum (the paper's combination).
- ``autoencoder``: a branch in the manner of EfficientAD's autoencoder (our reading: EfficientAD
  predicts the teacher's features from the image through a bottleneck of a few numbers, so
  what it reconstructs is the part's global layout; here the bottleneck autoencoder reconstructs
  the bank's own teacher features, finest scale, all lights, from themselves). Its map is the
  per-position squared error; its score the map's maximum, normalised on the held-out normals
  and fused with the bank as the ``logical`` preset fuses its branches (``logical.fuse``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from afrd.model.cad.inference import CADInference
from afrd.model.checkpoint import load_checkpoint
from afrd.model.sets import open_sets
from afrd.model.train import TrainConfig, train
from bench.cad import afrd_cpu_settings, scores

CAD_SIZE, CAD_STEPS = 128, 256  # bench/cad.py's cpu config
AE_LATENT, AE_STEPS, AE_LR = 32, 400, 1e-3


def cad_scores(data: Path, cat: str, test: list, seed: int, out: Path, steps: int) -> dict:
    """CAD trained on ``data``'s train split (val: its per-pixel normalisation): per scoring
    (local, global, sum) the test scores and CPU ms a part, and the training seconds."""
    sets = {s: open_sets(data, s, cat) for s in ("train", "val")}
    sets = {s: [d[i] for i in range(len(d))] for s, d in sets.items()}
    settings = afrd_cpu_settings(cat, CAD_SIZE, steps, seed)
    cfg = TrainConfig(**settings, out=str(out), student="local+global")
    t0 = time.perf_counter()
    ckpt = train(cfg, sets=sets["train"], norm_sets=sets["val"])
    res: dict = {"train_s": round(time.perf_counter() - t0, 1)}
    model, _ = load_checkpoint(ckpt)
    for part in ("local", "global", "both"):
        s, ms = scores(CADInference(model, combine="sum", part=part), test, CAD_SIZE)
        res["sum" if part == "both" else part] = (s, round(ms, 2))
    return res


class FeatureAutoencoder(nn.Module):
    """[B, C, 32, 32] -> the same through ``latent`` numbers: three stride-2 convolutions to
    4 x 4, a linear bottleneck, the mirror image back."""

    def __init__(self, channels: int, latent: int = AE_LATENT, grid: int = 32) -> None:
        super().__init__()
        if grid % 8:
            raise ValueError(f"feature grid {grid} is not a multiple of 8")
        g = grid // 8
        self.g = g
        self.enc = nn.Sequential(
            nn.Conv2d(channels, 128, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(128, 64, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * g * g, latent),
        )
        self.dec_in = nn.Linear(latent, 32 * g * g)
        self.dec = nn.Sequential(
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(32, 64, 3, 1, 1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(64, 128, 3, 1, 1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.dec_in(self.enc(x)).view(len(x), 32, self.g, self.g)
        return self.dec(z)


def _maps(feats: torch.Tensor) -> torch.Tensor:
    """The bank's patch features [B, N, Q, dim] as maps [B, N * dim, grid, grid]."""
    b, n, q, d = feats.shape
    g = int(round(q**0.5))
    return feats.permute(0, 1, 3, 2).reshape(b, n * d, g, g)


def autoencoder_scores(train_f, val_f, test_f, seed: int) -> dict:
    """Fitted on ``train_f`` (features standardised per channel on it): (val, test) image
    scores, the fit's CPU seconds and the CPU ms a test part."""
    torch.manual_seed(seed)
    x = _maps(train_f)
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True) + 1e-6
    x = (x - mean) / std
    ae = FeatureAutoencoder(x.shape[1], grid=x.shape[-1])
    opt = torch.optim.Adam(ae.parameters(), lr=AE_LR)
    gen = torch.Generator().manual_seed(seed)
    c0 = time.process_time()
    for _ in range(AE_STEPS):
        batch = x[torch.randint(len(x), (min(16, len(x)),), generator=gen)]
        loss = ((ae(batch) - batch) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fit_s = time.process_time() - c0
    ae.eval()

    @torch.no_grad()
    def score(f: torch.Tensor) -> np.ndarray:
        y = (_maps(f) - mean) / std
        return ((ae(y) - y) ** 2).mean(1).flatten(1).max(1).values.numpy()

    c0 = time.process_time()
    test_s = score(test_f)
    ms = 1000 * (time.process_time() - c0) / len(test_f)
    return {
        "val": score(val_f),
        "test": test_s,
        "fit_cpu_s": round(fit_s, 1),
        "ms_per_part": round(ms, 2),
        "final_loss": round(float(loss.detach()), 4),
    }


ROWS = ("cad local", "cad global", "cad sum", "autoencoder", "bank+autoencoder")


def other_rows(work: Path, data: Path, cat: str, test: list, seed: int, feats, bank, metrics,
               fuse, cad_steps: int) -> dict:  # fmt: skip
    """``ROWS`` as bench/logical.py reports its own: ``feats`` the bank's (train, val, test)
    features, ``bank`` its (val, test) scores, ``metrics`` scores -> I-AUROC per kind, ``fuse``
    bench/logical.py's (the bank's robust normalisation, max with normalised branches)."""
    from afrd.model.globalstats import MARGIN, robust_norm

    cad = cad_scores(data, cat, test, seed, work / "cad", cad_steps)
    rows: dict = {f"cad {k}": metrics(cad[k][0]) for k in ("local", "global", "sum")}
    ae = autoencoder_scores(*feats, seed)
    med, scale = robust_norm(torch.from_numpy(np.asarray(ae["val"], np.float64))).numpy()
    ae_t = (ae["test"] - med) / scale - MARGIN  # as a logical-preset branch
    rows["autoencoder"] = metrics(ae["test"])
    rows["bank+autoencoder"] = metrics(fuse(bank, (ae["val"], ae_t)))
    rows["others_cost"] = {
        "cad_train_s": cad["train_s"],
        "cad_ms_per_part": {k: cad[k][1] for k in ("local", "global", "sum")},
        "autoencoder_fit_cpu_s": ae["fit_cpu_s"],
        "autoencoder_ms_per_part": ae["ms_per_part"],
        "autoencoder_final_loss": ae["final_loss"],
    }
    return rows
