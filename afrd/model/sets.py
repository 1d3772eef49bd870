"""Image sets -> uint8 tensors at the model's input size (training and evaluation share this)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from afrd.data.imageset import ImageSet
from afrd.data.register import METHODS, RegisteredSets, Registration
from afrd.data.register_fit import AUTO, fit_registration
from afrd.errors import ConfigError, DataError


def resize_set(s: ImageSet, size: int, lights: Sequence[str] | None = None) -> np.ndarray:
    """[N, size, size, 3] uint8 in ``lights`` order (the set's own order if None)."""
    if lights is not None and tuple(s.lights) != tuple(lights):
        missing = [name for name in lights if name not in s.lights]
        if missing:
            raise DataError(
                f"image set {s.part_id or '?'} has lights {list(s.lights)}, the model needs "
                f"{list(lights)} (missing {missing})"
            )
        idx = [list(s.lights).index(name) for name in lights]
        images = s.images[idx]
    else:
        images = s.images
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        interp = cv2.INTER_AREA if im.shape[0] >= size else cv2.INTER_LINEAR
        out[i] = cv2.resize(im, (size, size), interpolation=interp)
    return out


def resize_mask(s: ImageSet, size: int) -> np.ndarray:
    """[size, size] uint8 0/1; zeros when the set has no mask."""
    if s.mask is None:
        return np.zeros((size, size), np.uint8)
    m = (np.asarray(s.mask) > 0).astype(np.uint8)
    if m.ndim == 3:
        m = m[..., 0]
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)


class SetDataset(torch.utils.data.Dataset):
    """Wraps anything with len/getitem (or an iterable, materialized) of ImageSets."""

    def __init__(self, sets, size: int, lights: Sequence[str] | None, normal_only: bool) -> None:
        if not (hasattr(sets, "__len__") and hasattr(sets, "__getitem__")):
            sets = list(sets)
        self.sets, self.size, self.lights, self.normal_only = sets, size, lights, normal_only

    def __len__(self) -> int:
        return len(self.sets)

    def __getitem__(self, i: int) -> dict:
        s = self.sets[i]
        return {
            "images": torch.from_numpy(resize_set(s, self.size, self.lights)),
            "label": -1 if s.label is None else int(s.label),
        }


def collate_normal(items: list[dict]) -> torch.Tensor:
    """Stack the normal (label != 1) sets of a batch; empty tensor if none."""
    keep = [it["images"] for it in items if it["label"] != 1]
    if not keep:
        return torch.empty(0, dtype=torch.uint8)
    return torch.stack(keep)


def open_sets(
    path: str | Path,
    split: str,
    category: str | None,
    lights=None,
    size: int | None = None,
    registration: Registration | None = None,
):
    """afrd.data.datasets.open_dataset (resizing at load to ``size``), registered to the
    reference pose when ``registration`` is given (see :func:`registered`)."""
    try:
        from afrd.data.datasets import open_dataset
    except ImportError as e:  # pragma: no cover - only before afrd.data is complete
        raise DataError(f"cannot read datasets: afrd.data.datasets is unavailable ({e})") from e
    kwargs: dict = {} if lights is None else {"lights": tuple(lights)}
    if size is not None:
        kwargs["size"] = size
    return registered(open_dataset(path, split, category=category, **kwargs), registration)


REGISTER_METHODS = ("none", AUTO, *METHODS)


def fit_sets_registration(
    sets, lights: Sequence[str], method: str, size: int = 128
) -> Registration | None:
    """The product's registration fitted on good ``sets``; None for ``method`` "none", or "auto"
    on parts that barely move. Train calls this once; its ``to_dict()`` goes into the checkpoint
    config under ``"registration"``."""
    if method not in REGISTER_METHODS:
        raise ConfigError(f"--register must be one of {REGISTER_METHODS}, got {method!r}")
    if method == "none":
        return None
    return fit_registration([sets[i] for i in range(len(sets))], lights, method=method, size=size)


def registered(sets, registration: Registration | None):
    """``sets`` as they come (None) or registered to the reference pose (images and masks): the
    one path train, eval and export parity take, the same function every engine applies."""
    return sets if registration is None else RegisteredSets(sets, registration)


def normal_subset(sets) -> list:
    """Indices-backed view of the sets not labelled defective (uses ``labels`` when the dataset
    knows them without loading images)."""
    labels = getattr(sets, "labels", None)
    if labels is None:
        return sets
    if callable(labels):
        labels = labels()
    keep = [i for i, lab in enumerate(labels) if lab != 1]
    if len(keep) == len(sets):
        return sets
    return _Subset(sets, keep)


class _Subset:
    def __init__(self, sets, idx: list[int]) -> None:
        self.sets, self.idx = sets, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        return self.sets[self.idx[i]]
