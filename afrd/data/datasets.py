"""Open image sets from disk, whichever layout they are in (Eyecandies or our capture layout)."""

from __future__ import annotations

import sys
from pathlib import Path

from afrd.data.capture import CaptureDataset, find_sets
from afrd.data.eyecandies import SPLITS, EyecandiesDataset, find_classes
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import DataError


def detect_layout(path: str | Path) -> str:
    """'eyecandies', 'eyecandies-class' (path is one class folder), 'capture' or DataError."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"dataset path {path} does not exist or is not a folder")
    if find_classes(path):
        return "eyecandies"
    if any((path / s / "data").is_dir() for s in SPLITS):
        return "eyecandies-class"
    if find_sets(path):
        return "capture"
    raise DataError(
        f"{path} is neither an Eyecandies-layout dataset (<root>/<Class>/train/data/"
        f"<id>_image_0.png ...) nor a capture root (<root>/<product>/<YYYY-MM-DD>/<part_id>/"
        f"set.json)"
    )


def open_dataset(
    path: str | Path,
    split: str = "train",
    category: str | None = None,
    lights: tuple[str, ...] = DEFAULT_LIGHTS,
    size: int | None = None,
    trust_verdicts: bool = False,
):
    """A dataset of ImageSets (``len``, ``[i]``, ``labels``) for ``split`` of ``category``.

    Eyecandies: ``category`` is the class folder (optional when ``path`` holds one class or is
    the class folder itself). Capture layout: ``category`` is the product (None: all); split
    "train" gives the normal sets, "test"/"test_public"/"val" the operator-reviewed ones.
    """
    path = Path(path)
    layout = detect_layout(path)
    if layout == "eyecandies":
        classes = find_classes(path)
        if category is None:
            if len(classes) != 1:
                raise DataError(f"{path} holds classes {classes}: pass a category")
            category = classes[0]
        return EyecandiesDataset(path, category, split, lights=lights, size=size)
    if layout == "eyecandies-class":
        if category not in (None, path.name):
            raise DataError(
                f"{path} is the Eyecandies class folder {path.name!r}, not {category!r}"
            )
        return EyecandiesDataset(path.parent, path.name, split, lights=lights, size=size)
    cap_split = {"test_public": "test", "test_private": "all"}.get(split, split)
    ds = CaptureDataset(
        path,
        product=category,
        split=cap_split,
        lights=lights,
        size=size,
        trust_verdicts=trust_verdicts,
    )
    if cap_split == "train":  # the user sees which recorded sets a model is trained on
        print(ds.summary(), file=sys.stderr, flush=True)
    return ds
