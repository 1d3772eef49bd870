"""The recorder's captures as the review page sees them: browse, open, label, export.

A capture is named by its id, ``<product>/<YYYY-MM-DD>/<part folder>`` relative to the recorder
directory (the layout of :mod:`afrd.data.capture`). Ids come from browsers, so every one is
checked against that shape and must resolve inside the root before anything is read or written.
Labels go through :func:`afrd.data.capture.set_label`, the same set.json field ``afrd train``
reads; an export copies labelled sets into a new folder in the same layout, which ``afrd train
--data`` and :class:`afrd.data.capture.CaptureDataset` accept as a dataset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from afrd.data.capture import load_set_json, safe_name, set_label
from afrd.errors import DataError

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PART = re.compile(r"^[^/\\\x00]+$")
HEATMAP = "heatmap.png"  # the page stores the daemon's overlay beside the capture it belongs to
VERDICTS = ("pass", "fail", "error")


class NotFound(DataError):
    """No such capture (or file in it)."""


def _summary(cid: str, doc: dict, set_dir: Path) -> dict:
    return {
        "id": cid,
        "part_id": doc.get("part_id"),
        "product": doc.get("product"),
        "captured_at": doc.get("captured_at"),
        "verdict": doc.get("verdict"),
        "score": doc.get("score"),
        "threshold": doc.get("threshold"),
        "label": doc.get("label"),
        "heatmap": (set_dir / HEATMAP).is_file(),
    }


class Captures:
    CACHE = 100_000  # set.json documents kept parsed (a few hundred bytes each)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._docs: dict[Path, tuple[int, dict]] = {}  # path -> (mtime_ns, document)

    def _doc(self, path: Path) -> dict:
        """set.json, parsed once per change (a day of captures is browsed again and again)."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as exc:
            raise DataError(f"capture record {path}: {exc}") from None
        hit = self._docs.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        doc = load_set_json(path)
        if len(self._docs) >= self.CACHE:
            self._docs.clear()
        self._docs[path] = (mtime, doc)
        return doc

    def resolve(self, cid: str) -> Path:
        """The folder of capture ``cid``; NotFound for anything not shaped like an id."""
        parts = cid.split("/") if isinstance(cid, str) else []
        if (
            len(parts) != 3
            or not _DAY.match(parts[1])
            or any(not _PART.match(p) or p in (".", "..") or p.startswith(".") for p in parts)
        ):
            raise NotFound(f"not a capture id: {cid!r} (expected <product>/<YYYY-MM-DD>/<part>)")
        d = self.root.joinpath(*parts)
        if not (d / "set.json").is_file():
            raise NotFound(f"no capture {cid!r} under {self.root}")
        return d

    def days(self) -> list[str]:
        """Days that have captures, newest first."""
        if not self.root.is_dir():
            return []
        found = {p.name for p in self.root.glob("*/*") if p.is_dir() and _DAY.match(p.name)}
        return sorted(found, reverse=True)

    def products(self) -> list[str]:
        """Product folders that have captures."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def query(
        self,
        day: str | None = None,
        verdict: str | None = None,
        label: str | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        product: str | None = None,
        limit: int = 500,
    ) -> tuple[list[dict], int]:
        """Capture summaries of one day (default the newest), filtered, newest first, at most
        ``limit`` of them, and how many matched.

        ``label``: "good" (0), "defective" (1), "unlabelled" or None for all."""
        if day is None:
            days = self.days()
            if not days:
                return [], 0
            day = days[0]
        if not _DAY.match(day):
            raise DataError(f"day {day!r}: expected YYYY-MM-DD")
        if verdict is not None and verdict not in VERDICTS:
            raise DataError(f"verdict {verdict!r}: expected one of {list(VERDICTS)}")
        want_label = {None: ..., "good": 0, "defective": 1, "unlabelled": None}
        if label not in want_label:
            raise DataError(f"label {label!r}: expected good, defective or unlabelled")
        prod = "*" if product is None else safe_name(product, "product")
        out = []
        for path in self.root.glob(f"{prod}/{day}/*/set.json"):
            if path.parent.name.startswith("."):
                continue  # a capture being written
            try:
                doc = self._doc(path)
            except DataError:
                continue  # deleted by retention while we looked, or not a capture
            score = doc.get("score")
            if verdict is not None and doc.get("verdict") != verdict:
                continue
            if label is not None and doc.get("label") != want_label[label]:
                continue
            if min_score is not None and (score is None or score < min_score):
                continue
            if max_score is not None and (score is None or score > max_score):
                continue
            out.append((doc.get("captured_at") or "", path.parent, doc))
        out.sort(key=lambda e: e[0], reverse=True)
        rows = [_summary(d.relative_to(self.root).as_posix(), doc, d) for _, d, doc in out[:limit]]
        return rows, len(out)

    def get(self, cid: str) -> dict:
        d = self.resolve(cid)
        doc = load_set_json(d / "set.json")
        return {**_summary(cid, doc, d), "lights": doc.get("lights", []), "doc": doc}

    def file(self, cid: str, name: str) -> Path:
        """A light's image (by light name), ``heatmap`` or ``mask`` of capture ``cid``."""
        d = self.resolve(cid)
        doc = load_set_json(d / "set.json")
        if name == "heatmap":
            fname = HEATMAP
        elif name == "mask":
            fname = doc.get("mask")
        else:
            fname = doc.get("files", {}).get(name)
        if not fname or "/" in fname or fname.startswith(".") or not (d / fname).is_file():
            raise NotFound(f"capture {cid!r} has no {name!r} image")
        return d / fname

    def label(self, cid: str, label: int | None) -> dict:
        if label not in (0, 1, None):
            raise DataError(f"label {label!r}: expected 0 (good), 1 (defective) or null")
        d = self.resolve(cid)
        set_label(d, label)
        return self.get(cid)

    def find_for_result(self, result: dict) -> str | None:
        """The capture the recorder wrote for a published result, if any (same part id, product
        and score; the newest of several captures of one part id)."""
        try:
            product = safe_name(result.get("product") or "unknown", "product")
            part = safe_name(result["part_id"], "part_id")
            ts = datetime.fromisoformat(result["timestamp"].replace("Z", "+00:00"))
        except (KeyError, ValueError, AttributeError, DataError):
            return None
        best = None
        for day in {(ts + timedelta(seconds=s)).astimezone(timezone.utc) for s in (0, 60)}:
            day_dir = self.root / product / day.strftime("%Y-%m-%d")
            if not (day_dir / part / "set.json").is_file():
                continue  # never recorded (a repeat, part~2, exists only beside a first)
            for d in [day_dir / part, *day_dir.glob(f"{glob_escape(part)}~*")]:
                try:
                    doc = load_set_json(d / "set.json")
                except DataError:
                    continue
                if doc.get("score") == result.get("score") and doc.get("verdict") == result.get(
                    "verdict"
                ):
                    mtime = (d / "set.json").stat().st_mtime
                    if best is None or mtime > best[0]:
                        best = (mtime, d)
        return None if best is None else best[1].relative_to(self.root).as_posix()

    def save_heatmap(self, cid: str, png: bytes) -> None:
        """Store the daemon's overlay beside the capture (atomically; retention may race us)."""
        d = self.resolve(cid)
        tmp = d / f".{HEATMAP}.tmp"
        tmp.write_bytes(png)
        os.replace(tmp, d / HEATMAP)

    def export(self, ids: list[str], out_root: Path, name: str | None = None) -> dict:
        """Copy the labelled captures among ``ids`` into a new dataset folder under ``out_root``.

        Unlabelled ones are skipped (a training set needs a decision for every part). Returns
        the folder, counts and what was skipped."""
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataError("export: ids must be a list of capture ids")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = safe_name(name, "export name") if name else f"captures-{stamp}"
        dest = Path(out_root) / folder
        if dest.exists():
            raise DataError(f"export: {dest} already exists; choose another name")
        chosen, skipped = [], []
        for cid in ids:
            doc = self.get(cid)
            (chosen if doc["label"] in (0, 1) else skipped).append(cid)
        if not chosen:
            raise DataError(
                f"export: none of the {len(ids)} captures is labelled good or defective"
            )
        tmp = Path(out_root) / f".{folder}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for cid in chosen:
                shutil.copytree(self.resolve(cid), tmp / cid, ignore=_skip_hidden)
            manifest = {
                "schema": "afrd.export/1",
                "source": str(self.root),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sets": chosen,
                "good": sum(1 for c in chosen if self.get(c)["label"] == 0),
                "defective": sum(1 for c in chosen if self.get(c)["label"] == 1),
            }
            (tmp / "export.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            os.rename(tmp, dest)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"export: could not write {dest}: {exc}") from None
        return {
            "path": str(dest),
            "exported": len(chosen),
            "good": manifest["good"],
            "defective": manifest["defective"],
            "skipped_unlabelled": skipped,
        }


def _skip_hidden(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(".")]


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def export_folder(out_root: Path, name: str) -> Path:
    """An existing export under ``out_root`` by its folder name; NotFound otherwise."""
    if not isinstance(name, str) or not _PART.match(name) or name.startswith("."):
        raise NotFound(f"not an export name: {name!r}")
    d = Path(out_root) / name
    if not (d / "export.json").is_file():
        raise NotFound(f"no export {name!r} in {out_root}")
    return d


class _Chunks:
    """A write-only file that hands out what was written (tarfile in stream mode writes here)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def drain(self) -> Iterator[bytes]:
        out, self.parts = self.parts, []
        yield from out


def tar_stream(folder: Path) -> Iterator[bytes]:
    """``folder`` as an uncompressed tar (PNGs do not compress), produced file by file."""
    buf = _Chunks()
    with tarfile.open(fileobj=buf, mode="w|") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder.parent).as_posix(), recursive=False)
            yield from buf.drain()
    yield from buf.drain()
