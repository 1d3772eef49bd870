"""Teacher features computed once per training set, reused every epoch.

The teacher is frozen and training sets are not augmented, so its maps for a set are the same in
every epoch; on a CPU the teacher is most of a step's cost (EfficientNet-Lite0, six lights at
128 px: ~0.9 s of ~1.0 s per batch of 8). Caching them lets fusion, bottleneck and decoder take
several times more optimiser steps in the same minutes, with the same result as recomputing.

Where the cache lives (``mode``): ``ram``; ``disk`` (one ``.npy`` memory map per scale under a
directory, deleted with the cache); ``off`` (the teacher runs in every step); ``auto`` picks RAM
when the cache takes at most a quarter of the available memory, else disk on a CPU and ``off``
on a GPU (a GPU reruns the teacher faster than a disk reads its maps back).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from afrd.errors import ConfigError
from afrd.model.distill.network import AFRD
from afrd.model.inference import normalize
from afrd.model.sets import SetDataset, collate_normal

MODES = ("auto", "ram", "disk", "off")
RAM_FRACTION = 0.25  # auto: the cache may take this share of the available memory


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable), or physical pages free."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_bytes(model: AFRD, n_sets: int) -> int:
    """Bytes of float32 teacher maps for ``n_sets`` sets at the model's input size."""
    views = 1 if model.light is not None else model.n_lights
    per_view = sum(
        c * (model.image_size // s) ** 2
        for c, s in zip(model.teacher.channels, model.teacher.strides, strict=True)
    )
    return 4 * n_sets * views * per_view


def choose_mode(mode: str, nbytes: int, device: torch.device) -> tuple[str, str]:
    """(``ram`` | ``disk`` | ``off``, why) for a requested mode and a cache of ``nbytes``."""
    if mode not in MODES:
        raise ConfigError(f"feature cache must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode, "as asked"
    avail = available_memory()
    if nbytes <= RAM_FRACTION * avail:
        return "ram", f"fits in {RAM_FRACTION:.0%} of {avail / 2**30:.1f} GiB available"
    if device.type == "cuda":
        return "off", (
            f"{nbytes / 2**30:.1f} GiB would not fit in RAM ({avail / 2**30:.1f} GiB available)"
            " and the GPU reruns the teacher faster than a disk reads it back"
        )
    return "disk", f"{nbytes / 2**30:.1f} GiB would not fit in RAM ({avail / 2**30:.1f} GiB)"


class FeatureCache:
    """Per-light teacher maps of every set, one array [S, n, C, h, w] per scale.

    ``n`` is 1 for a single-light model (the light it reads) and N otherwise. ``batch(idx)``
    returns what ``model.teacher_features`` would for those sets, ready for ``model.restore``.
    """

    def __init__(self, scales: list[np.ndarray], where: str, spill: Path | None = None) -> None:
        self.scales, self.where, self._spill = scales, where, spill

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.scales)

    def __len__(self) -> int:
        return len(self.scales[0])

    def batch(self, idx: Sequence[int], device: torch.device) -> list[torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        return [torch.from_numpy(np.ascontiguousarray(a[idx])).to(device) for a in self.scales]

    def close(self) -> None:
        """Drop the arrays and delete the disk copy, if any."""
        self.scales = []
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: AFRD,
        arrays: Callable[[int], np.ndarray],
        n_sets: int,
        device: torch.device,
        where: str,
        spill_dir: Path | None = None,
        batch_size: int = 8,
    ) -> FeatureCache:
        """Run the teacher once over sets ``arrays(0..n_sets-1)`` (uint8 [N, H, W, 3] each).

        ``where`` is ``ram`` or ``disk`` (then ``spill_dir`` holds the memory maps)."""
        if where not in ("ram", "disk"):
            raise ConfigError(f"FeatureCache.build: where must be ram or disk, got {where!r}")
        scales: list[np.ndarray] = []
        spill = None
        if where == "disk":
            if spill_dir is None:
                raise ConfigError("a disk feature cache needs a directory")
            spill = Path(spill_dir)
            spill.mkdir(parents=True, exist_ok=True)
        for start in range(0, n_sets, batch_size):
            stop = min(start + batch_size, n_sets)
            x = torch.from_numpy(np.stack([arrays(i) for i in range(start, stop)]))
            feats = model.teacher_features(normalize(x.to(device)))
            for s, f in enumerate(feats):
                f = f.float().cpu().numpy()
                if not start:
                    shape = (n_sets, *f.shape[1:])
                    scales.append(
                        np.lib.format.open_memmap(
                            spill / f"scale{s}.npy", mode="w+", dtype=np.float32, shape=shape
                        )
                        if spill is not None
                        else np.empty(shape, np.float32)
                    )
                scales[s][start:stop] = f
        return cls(scales, where, spill)


class TrainingBatches:
    """Per-light teacher maps of each training batch, from a FeatureCache or the teacher.

    Both paths draw the same shuffled order from the same generator (re-seeded per epoch, so a
    resumed run matches) and drop defective sets the same way, so they train identically."""

    def __init__(
        self,
        model: AFRD,
        dataset: SetDataset,
        device: torch.device,
        batch_size: int,
        seed: int,
        workers: int = 0,
        cache: FeatureCache | None = None,
        defective: np.ndarray | None = None,
    ) -> None:
        self.model, self.device, self.cache, self.seed = model, device, cache, seed
        self.defective = np.zeros(len(dataset), bool) if defective is None else defective
        self.gen = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(
            range(len(dataset)) if cache is not None else dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=self.gen,
            num_workers=0 if cache is not None else workers,
            collate_fn=None if cache is not None else collate_normal,
        )

    def __call__(self, epoch: int) -> Iterator[list[torch.Tensor]]:
        self.gen.manual_seed(self.seed * 100003 + epoch)  # per-epoch order
        for batch in self.loader:
            if self.cache is None:
                if batch.numel():
                    yield self.model.teacher_features(normalize(batch.to(self.device)))
                continue
            idx = batch.numpy()
            idx = idx[~self.defective[idx]]
            if len(idx):
                yield self.cache.batch(idx, self.device)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def training_batches(
    model: AFRD,
    dataset: SetDataset,
    device: torch.device,
    mode: str,
    batch_size: int,
    seed: int,
    workers: int,
    out: Path,
) -> TrainingBatches:
    """Build the feature cache ``mode`` asks for (saying where it went and why) and the
    batches over it; a disk cache goes under ``out/feature_cache`` until ``close()``."""
    nbytes = cache_bytes(model, len(dataset))
    where, why = choose_mode(mode, nbytes, device)
    if where == "off":
        print(f"afrd train: feature cache off ({why}): the teacher runs every step", flush=True)
        return TrainingBatches(model, dataset, device, batch_size, seed, workers)
    t0 = time.perf_counter()
    defective = np.zeros(len(dataset), bool)

    def arrays(i: int) -> np.ndarray:
        item = dataset[i]
        defective[i] = item["label"] == 1
        return item["images"].numpy()

    cache = FeatureCache.build(
        model, arrays, len(dataset), device, where, Path(out) / "feature_cache", batch_size
    )
    print(
        f"afrd train: feature cache in {where} ({why}): {len(dataset)} sets, "
        f"{nbytes / 2**20:.0f} MiB, teacher ran once in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return TrainingBatches(model, dataset, device, batch_size, seed, 0, cache, defective)
