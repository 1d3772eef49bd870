"""The project's own capture layout: what a cell's recorder writes and ``afrd train`` reads.

::

    <root>/<product>/<YYYY-MM-DD>/<part_id>/
        ring_all.png  ring_bottom.png ... box.png   one 8-bit RGB PNG per lighting, by name
        mask.png                                    optional defect mask (0/255), e.g. from review
        set.json                                    schema "afrd.capture/1", written last

``set.json``::

    {"schema": "afrd.capture/1", "part_id": "...", "product": "...",
     "captured_at": "2026-11-23T11:32:00.123Z",        # UTC, first image's timestamp
     "lights": ["ring_all", ...], "files": {"ring_all": "ring_all.png", ...},
     "timestamps": [UNIX seconds per image], "size": [H, W],
     "verdict": "pass"|"fail"|"error"|null, "score": float|null, "threshold": float|null,
     "label": null|0|1,          # operator review: 0 good, 1 defective, null not reviewed
     "mask": "mask.png"|null, "model": {"name": ..., "sha256": ...}|null, "meta": {...},
     "holdout": true}            # optional: kept out of training, for validation

A capture is written into a hidden temporary folder and renamed into place, so a reader never
sees half a set. Which sets count as normal for training: those an operator labelled 0; with
``trust_verdicts=True`` also unreviewed sets the model passed (verdict "pass", label null).
Sets labelled 1, failed, or errored never train. ``split="test"`` yields the reviewed sets
(label 0 or 1), ``split="all"`` everything. Sets marked ``holdout`` (``afrd capture
--holdout F``) never train; when a root has any, ``split="val"`` is its reviewed holdout sets
(what map statistics and thresholds are fitted on, apart from the training parts), otherwise
every reviewed set.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from afrd.data.eyecandies import read_mask, read_rgb, resize_set
from afrd.data.imageset import ImageSet
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import DataError

log = logging.getLogger("afrd.data.capture")

SCHEMA = "afrd.capture/1"
_SAFE = re.compile(r"[^\w.-]+")  # \w: letters and digits of any script (product names)
_NAME_BYTES = 150  # a folder name (with the temp prefix) stays under NAME_MAX = 255 bytes
CAPTURE_SPLITS = ("train", "val", "test", "test_public", "all")


def safe_name(name: str, what: str) -> str:
    """``name`` as one folder name of the capture layout (``what`` names it in the DataError
    raised when nothing usable is left); the web page's queries and exports use it too."""
    out = _SAFE.sub("_", name).strip("._")
    out = out.encode()[:_NAME_BYTES].decode("utf-8", "ignore")
    if not out:
        raise DataError(f"capture: {what} {name!r} has no usable characters for a folder name")
    return out


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_capture(root: str | Path, imageset: ImageSet, result: dict | None = None) -> Path:
    """Write one image set and its inspection result; return the set's folder.

    ``result`` may carry verdict, score, threshold, model {name, sha256}, label, timestamp
    (UNIX seconds or ISO string) and meta. The folder is
    ``<root>/<product>/<UTC day>/<part_id>`` (``<part_id>~2``.. if the part was seen before).
    """
    result = dict(result or {})
    root = Path(root)
    ts = imageset.timestamps[0] if imageset.timestamps else result.get("timestamp", time.time())
    if isinstance(ts, str):
        captured = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(timezone.utc)
    else:
        captured = datetime.fromtimestamp(float(ts), tz=timezone.utc)
    product = safe_name(imageset.product or "unknown", "product")
    part = safe_name(imageset.part_id or captured.strftime("%H%M%S%f"), "part_id")
    day_dir = root / product / captured.strftime("%Y-%m-%d")
    day_dir.mkdir(parents=True, exist_ok=True)
    label = result.get("label", None)
    if label not in (None, 0, 1):
        raise DataError(f"capture {part}: label must be null, 0 or 1, got {label!r}")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{part}-", dir=day_dir))
    try:
        files = {}
        for light, img in zip(imageset.lights, imageset.images, strict=True):
            name = f"{safe_name(light, 'light')}.png"
            if not cv2.imwrite(str(tmp / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
                raise DataError(f"capture {part}: could not write {tmp / name}")
            files[light] = name
        mask_name = None
        if imageset.mask is not None and (imageset.label == 1 or imageset.mask.any()):
            mask_name = "mask.png"
            cv2.imwrite(str(tmp / mask_name), (imageset.mask > 0).astype(np.uint8) * 255)
        doc = {
            "schema": SCHEMA,
            "part_id": imageset.part_id,
            "product": imageset.product,
            "captured_at": captured.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "lights": list(imageset.lights),
            "files": files,
            "timestamps": [float(t) for t in imageset.timestamps],
            "size": list(imageset.images.shape[1:3]),
            "verdict": result.get("verdict"),
            "score": None if result.get("score") is None else float(result["score"]),
            "threshold": None if result.get("threshold") is None else float(result["threshold"]),
            "label": label,
            "mask": mask_name,
            "model": _json_safe(result.get("model")),
            "meta": _json_safe({**imageset.meta, **result.get("meta", {})}),
        }
        if result.get("holdout"):
            doc["holdout"] = True
        (tmp / "set.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.chmod(tmp, 0o755)
        for n in range(1, 10_000):
            final = day_dir / (part if n == 1 else f"{part}~{n}")
            try:
                os.rename(tmp, final)  # atomic on one filesystem; fails if final exists
                return final
            except OSError:
                if not final.exists():
                    raise
        raise DataError(f"capture {part}: too many captures of one part id in {day_dir}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def set_label(set_dir: str | Path, label: int | None) -> None:
    """Record an operator's review (0 good, 1 defective, None unreviewed) in set.json."""
    path = Path(set_dir) / "set.json"
    doc = load_set_json(path)
    if label not in (None, 0, 1):
        raise DataError(f"{path}: label must be null, 0 or 1, got {label!r}")
    doc["label"] = label
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def load_set_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable capture record {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"{path}: schema {got!r}, expected {SCHEMA!r}")
    return doc


def find_sets(root: str | Path, product: str | None = None) -> list[Path]:
    """set.json files under a capture root (or under one product's folder)."""
    root = Path(root)
    pattern = (
        "*/*/*/set.json" if product is None else f"{safe_name(product, 'product')}/*/*/set.json"
    )
    found = sorted(root.glob(pattern))
    if not found and product is None:  # root may be one product's folder
        found = sorted(root.glob("*/*/set.json"))
    return [p for p in found if not p.parent.name.startswith(".tmp-")]


class CaptureDataset:
    """Image sets from a capture root: ``len`` and ``[i] -> ImageSet``.

    ``split``: "train" = normal sets (label 0; with ``trust_verdicts`` also unreviewed passes),
    "test"/"val"/"test_public" = reviewed sets (label 0 or 1), "all" = every set.
    ``lights`` picks images by name; a set lacking one is a DataError naming it. A set that
    cannot be read whole (set.json unreadable, an image file it lists missing: a copy or a
    deletion cut short) is skipped with a warning naming it, counted in ``skipped``.
    """

    def __init__(
        self,
        root: str | Path,
        product: str | None = None,
        split: str = "train",
        lights: tuple[str, ...] = DEFAULT_LIGHTS,
        size: int | None = None,
        trust_verdicts: bool = False,
    ) -> None:
        if split not in CAPTURE_SPLITS:
            raise DataError(
                f"unknown capture split {split!r}: expected one of {list(CAPTURE_SPLITS)}"
            )
        self.root = Path(root)
        self.product = product
        self.split = split
        self.lights = tuple(lights)
        self.size = size
        self.trust_verdicts = trust_verdicts
        self.sets: list[Path] = []
        self._docs: list[dict] = []
        self.counts = dict.fromkeys(
            ("sets", "good", "defective", "unreviewed", "unreviewed_pass", "holdout"), 0
        )
        self.skipped: list[str] = []  # "<set folder>: why", one per set left out
        docs = [d for d in map(self._read, find_sets(self.root, product)) if d is not None]
        self._holdouts = any(doc.get("holdout") for _, doc in docs)
        for set_dir, doc in docs:
            self._count(doc)
            if self._keep(doc):
                self.sets.append(set_dir)
                self._docs.append(doc)
        if split == "train" and not self.sets:
            raise DataError(self._nothing_to_train())

    def _read(self, path: Path) -> tuple[Path, dict] | None:
        """(set folder, set.json) when the set is whole, else None (warned and counted)."""
        try:
            doc = load_set_json(path)
            files = doc.get("files") or {}
            if not isinstance(files, dict):
                raise DataError(f"{path}: 'files' is not an object")
            gone = sorted(str(f) for f in files.values() if not (path.parent / str(f)).is_file())
            if gone:
                raise DataError(f"capture {path.parent}: incomplete set, missing {gone}")
        except DataError as exc:
            log.warning("skipped: %s", exc)
            self.skipped.append(str(exc))
            return None
        return path.parent, doc

    def _count(self, doc: dict) -> None:
        c = self.counts
        c["sets"] += 1
        c["holdout"] += bool(doc.get("holdout"))
        label = doc.get("label")
        if label == 0:
            c["good"] += 1
        elif label == 1:
            c["defective"] += 1
        else:
            c["unreviewed"] += 1
            c["unreviewed_pass"] += doc.get("verdict") == "pass"

    def summary(self) -> str:
        """How many sets the root holds by label, and how many this split uses."""
        c = self.counts
        where = f"{self.root}" + (f" (product {self.product!r})" if self.product else "")
        return (
            f"capture root {where}: {c['sets']} sets, {c['good']} labelled good, "
            f"{c['defective']} defective, {c['unreviewed']} unreviewed, {c['holdout']} held out "
            f"for validation; split {self.split!r} uses {len(self.sets)}"
            + (f"; {len(self.skipped)} incomplete or unreadable skipped" if self.skipped else "")
        )

    def _skipped_note(self) -> str:
        """The first skipped set and why (the rest went to the log), for an error message."""
        if not self.skipped:
            return ""
        more = f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""
        return f"; skipped: {self.skipped[0]}{more}"

    def _nothing_to_train(self) -> str:
        c = self.counts
        if c["sets"] == 0:
            todo = (
                "no image sets at all: record good parts with `afrd capture --config cell.toml "
                "--count 50 --label good` (or the daemon's recorder)"
            )
        else:
            todo = (
                "training uses sets labelled good (label 0): review them with `afrd label "
                f"{self.root} --all --good` (or by --part/--day/--verdict, or on the operator "
                "page)"
            )
            if c["unreviewed_pass"] and not self.trust_verdicts:
                todo += f"; {c['unreviewed_pass']} unreviewed sets a model passed could be used"
        return f"{self.summary()}: no labelled good set to train on; {todo}{self._skipped_note()}"

    def _keep(self, doc: dict) -> bool:
        label = doc.get("label")
        if self.split == "all":
            return True
        if self.split == "train":
            return not doc.get("holdout") and (
                label == 0
                or (self.trust_verdicts and label is None and doc.get("verdict") == "pass")
            )
        if self.split == "val" and self._holdouts:
            return bool(doc.get("holdout")) and label in (0, 1)
        return label in (0, 1)

    def __len__(self) -> int:
        return len(self.sets)

    @property
    def labels(self) -> list[int | None]:
        return [self._label(doc) for doc in self._docs]

    def _label(self, doc: dict) -> int | None:
        if self.split == "train":
            return 0
        return doc.get("label")

    def __getitem__(self, i: int) -> ImageSet:
        set_dir, doc = self.sets[i], self._docs[i]
        what = f"capture {set_dir}"
        files = doc.get("files", {})
        missing = [light for light in self.lights if light not in files]
        if missing:
            raise DataError(f"{what}: no image for lights {missing} (set has {list(files)})")
        images = np.stack([read_rgb(set_dir / files[light], what) for light in self.lights])
        mask = None
        if doc.get("mask"):
            mask = read_mask(set_dir / doc["mask"], what)
        label = self._label(doc)
        if mask is None and label == 0:
            mask = np.zeros(images.shape[1:3], np.uint8)
        images, mask = resize_set(images, mask, self.size)
        ts = doc.get("timestamps") or []
        by_light = dict(zip(doc.get("lights", []), ts, strict=False))
        return ImageSet(
            images=np.ascontiguousarray(images),
            lights=self.lights,
            part_id=str(doc.get("part_id", set_dir.name)),
            product=str(doc.get("product", "")),
            label=label,
            mask=mask,
            timestamps=[float(by_light[light]) for light in self.lights if light in by_light],
            meta={
                "source": "capture",
                "path": str(set_dir),
                "verdict": doc.get("verdict"),
                "score": doc.get("score"),
                "threshold": doc.get("threshold"),
                "model": doc.get("model"),
            },
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
