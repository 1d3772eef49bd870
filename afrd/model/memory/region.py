"""The part's region on the patch grid: where a (registered) part can lie.

A patch outside every training part's silhouette, dilated by ``MARGIN``, has only ever shown
background; the bank searches such patches in a small background bank of their own
(``afrd.model.memory.bank.ScaleBank``). Measured on the rendered parts from 64 sets (issue 23,
bench/linespeed.py): the region covers 33-46 % of a 256 px frame (69 % for gummy at any
rotation), so the part's own search and coreset shrink by half or more, at the I-AUROC of the
bank over every patch (BENCHMARKS.md). From fewer sets the union misses where good parts reach,
so the fit makes a region only from ``MemoryOptions.region_min_sets`` sets on.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from afrd.data.silhouette import gray, silhouette
from afrd.errors import RegistrationError

MARGIN = 1 / 16  # of the frame side (16 px at 256): registration jitter, a slightly larger part
MAX_COVER = 0.9  # a region over more of the frame saves nothing worth a split search


def part_mask(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """The union of the training parts' filled silhouettes (each found on the mean of the
    set's lights), dilated by ``MARGIN``: uint8 [H, W] 0/1; None when no part stands out from
    the background in half the sets or the union fills the frame (then every patch is the
    part's)."""
    union, found = None, 0
    for a in arrays:
        grey = np.mean([gray(im) for im in a], axis=0)  # [N, H, W, 3] -> [H, W]
        try:
            m = silhouette(grey)
        except RegistrationError:
            continue
        union = m if union is None else np.maximum(union, m)
        found += 1
    if union is None or found * 2 < len(arrays):
        return None
    r = max(1, round(MARGIN * union.shape[0]))
    union = cv2.dilate(union, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    return None if union.mean() > MAX_COVER else union


def patch_region(mask: np.ndarray | None, grid: int) -> torch.Tensor | None:
    """``mask`` [H, W] -> bool [grid * grid], row-major: a patch is in the region when any
    pixel of its cell is (None stays None)."""
    if mask is None:
        return None
    h, w = mask.shape
    size = (grid * -(-w // grid), grid * -(-h // grid))
    m = mask if size == (w, h) else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    cells = m.reshape(grid, m.shape[0] // grid, grid, m.shape[1] // grid).max(axis=(1, 3))
    return torch.from_numpy(cells.reshape(-1) > 0)
