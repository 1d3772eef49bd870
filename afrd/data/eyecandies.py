"""The Eyecandies dataset as its authors distribute it (and as ``afrd synth`` writes it).

Layout: ``<root>/<Class>/{train,val,test_public,test_private}/data/<id>_<item>.<ext>`` where
items are ``image_0..image_5`` (png), ``depth``, ``normals``, ``metadata.yaml``
(``anomalous: 0|1``), ``mask`` (union of the defect masks) and per-type masks. Ids are
zero-padded to different widths in different splits (``000`` in train, ``00`` in test_public), so
they are parsed as integers. ``test_private`` ships without metadata or masks: labels are None.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS, EYECANDIES_FILES
from afrd.errors import DataError

EYECANDIES_CLASSES: tuple[str, ...] = (
    "CandyCane",
    "ChocolateCookie",
    "ChocolatePraline",
    "Confetto",
    "GummyBear",
    "HazelnutTruffle",
    "LicoriceSandwich",
    "Lollipop",
    "Marshmallow",
    "PeppermintCandy",
)
SPLITS: tuple[str, ...] = ("train", "val", "test_public", "test_private")
_NAME = re.compile(r"^(\d+)_(.+)\.([A-Za-z0-9]+)$")
# Splits whose samples are all good when metadata is absent (the authors' train/val are normal).
_NORMAL_SPLITS = ("train", "val")


def parse_metadata(path: Path) -> dict[str, object]:
    """The flat ``key: value`` YAML Eyecandies writes (no pyyaml dependency).

    Integers and floats become numbers, everything else stays a string; nested or list-valued
    keys are ignored (they are not used here).
    """
    out: dict[str, object] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line or line.startswith((" ", "\t", "-")) or ":" not in line:
            continue
        key, value = line.split(":", 1)
        value = value.strip().strip("'\"")
        if not value:
            continue
        for conv in (int, float):
            try:
                out[key.strip()] = conv(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value
    return out


def read_rgb(path: Path, what: str) -> np.ndarray:
    """An 8-bit RGB image, or DataError naming ``what`` (the sample) and the file."""
    if not path.is_file():
        raise DataError(f"{what}: missing image {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{what}: unreadable image {path} (not a valid image file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, what: str) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{what}: unreadable mask {path}")
    if img.ndim == 3:
        img = img.max(axis=2)
    return (img > 0).astype(np.uint8)


def resize_set(images: np.ndarray, mask: np.ndarray | None, size: int | None):
    if size is None or images.shape[1:3] == (size, size):
        return images, mask
    images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    if mask is not None:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return images, mask


class EyecandiesDataset:
    """One class and split of Eyecandies: ``len`` and ``[i] -> ImageSet`` (torch-free).

    ``lights`` picks and orders the lighting images by name (``EYECANDIES_FILES``); ``size``
    resizes images (area) and masks (nearest) to ``size`` x ``size``.
    """

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: str = "train",
        lights: tuple[str, ...] = DEFAULT_LIGHTS,
        size: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.category = category
        self.split = split
        self.lights = tuple(lights)
        self.size = size
        unknown = [name for name in self.lights if name not in EYECANDIES_FILES]
        if unknown:
            raise DataError(
                f"unknown lights {unknown} for Eyecandies: expected names from "
                f"{list(EYECANDIES_FILES)}"
            )
        if split not in SPLITS:
            raise DataError(f"unknown Eyecandies split {split!r}: expected one of {list(SPLITS)}")
        cat_dir = self.root / category
        if not cat_dir.is_dir():
            found = (
                sorted(p.name for p in self.root.iterdir() if p.is_dir())
                if self.root.is_dir()
                else []
            )
            raise DataError(f"no class folder {cat_dir} (classes found in {self.root}: {found})")
        self.data_dir = cat_dir / split / "data"
        if not self.data_dir.is_dir():
            raise DataError(
                f"no split folder {self.data_dir} (expected <root>/<Class>/{split}/data)"
            )
        files: dict[int, dict[str, Path]] = defaultdict(dict)
        stems: dict[int, str] = {}
        for p in self.data_dir.iterdir():
            m = _NAME.match(p.name)
            if not m:
                continue
            sid = int(m.group(1))
            files[sid][m.group(2)] = p
            stems[sid] = m.group(1)
        if not files:
            raise DataError(f"no samples in {self.data_dir} (expected files <id>_image_0.png ...)")
        self.ids = sorted(files)
        self._files = files
        self._stems = stems
        for sid in self.ids:  # fail before training starts, not in the middle of an epoch
            for light in self.lights:
                item = EYECANDIES_FILES[light]
                if item not in files[sid]:
                    raise DataError(
                        f"{self._what(sid)}: missing {light} image "
                        f"{self.data_dir / f'{stems[sid]}_{item}.png'}"
                    )

    def _what(self, sid: int) -> str:
        return f"Eyecandies {self.category}/{self.split} sample {self._stems[sid]}"

    def __len__(self) -> int:
        return len(self.ids)

    def label(self, i: int) -> int | None:
        """The sample's label from metadata.yaml without reading its images."""
        sid = self.ids[i]
        meta = self._files[sid].get("metadata")
        if meta is not None:
            value = parse_metadata(meta).get("anomalous")
            if value is None:
                raise DataError(f"{self._what(sid)}: {meta} has no 'anomalous: 0|1' key")
            if value not in (0, 1):
                raise DataError(
                    f"{self._what(sid)}: {meta} has anomalous: {value!r}, expected 0 or 1"
                )
            return int(value)
        return 0 if self.split in _NORMAL_SPLITS else None

    @property
    def labels(self) -> list[int | None]:
        return [self.label(i) for i in range(len(self))]

    def __getitem__(self, i: int) -> ImageSet:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        sid = self.ids[i]
        what = self._what(sid)
        files = self._files[sid]
        images = np.stack([read_rgb(files[EYECANDIES_FILES[light]], what) for light in self.lights])
        label = self.label(i)
        mask = None
        if "mask" in files:
            mask = read_mask(files["mask"], what)
        elif label == 0:
            mask = np.zeros(images.shape[1:3], np.uint8)
        if mask is not None and mask.shape != images.shape[1:3]:
            mask = cv2.resize(mask, images.shape[2:0:-1], interpolation=cv2.INTER_NEAREST)
        images, mask = resize_set(images, mask, self.size)
        extra = {k: str(v) for k, v in files.items() if not k.startswith("image_")}
        return ImageSet(
            images=np.ascontiguousarray(images),
            lights=self.lights,
            part_id=f"{self.split}/{self._stems[sid]}",
            product=self.category,
            label=label,
            mask=mask,
            meta={"source": "eyecandies", "id": sid, "files": extra},
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def find_classes(root: str | Path) -> list[str]:
    """Class folders under ``root`` that hold at least one Eyecandies split."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and any((p / s / "data").is_dir() for s in SPLITS)
    )
