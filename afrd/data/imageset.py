"""The unit everything passes around: one part imaged under N named lights."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSet:
    """N images of one part, one per lighting condition, in ``lights`` order.

    ``images`` is [N, H, W, 3] uint8 RGB. ``mask`` (H, W, uint8 0/1) and ``label`` (0 good,
    1 defective) are known for datasets and the simulated cell, ``None`` on a real line.
    """

    images: np.ndarray
    lights: tuple[str, ...]
    part_id: str = ""
    product: str = ""
    label: int | None = None
    mask: np.ndarray | None = None
    timestamps: list[float] = field(default_factory=list)  # UNIX time each image was grabbed
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"ImageSet images must be [N,H,W,3] uint8, got {self.images.shape} {self.images.dtype}"
            )
        if len(self.lights) != self.images.shape[0]:
            raise ValueError(
                f"ImageSet has {self.images.shape[0]} images but {len(self.lights)} light names"
            )
