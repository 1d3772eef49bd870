"""Recorder: keeps image sets with their results on disk in the capture layout `afrd train` reads.

Every fail and error-free part's image set goes to ``afrd.data.capture.write_capture``: all fails,
a deterministic share ``pass_sample_rate`` of passes. Retention deletes the oldest captures until
the total is under ``max_bytes`` and nothing is older than ``max_age_days``, always a whole
capture folder at a time: the index holds capture folders, from this run's writes and, after a
restart, from the scan of what earlier runs left, so training never meets half a set. A folder
is removed by renaming it hidden first (readers stop seeing it at once) and then deleting it;
hidden leftovers of a write or a deletion cut short by a crash go at the next start. Writing runs on its
own thread behind a bounded queue, so a slow disk never stalls inspection; a full queue skips the
record (counted), a full disk (ENOSPC, or free space under ``min_free_bytes``) stops recording
with a warning while inspection goes on.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from afrd.config.cell import RecorderConfig

log = logging.getLogger("afrd.daemon.recorder")


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _age(folder: Path) -> float:
    """When a capture was written: its oldest file's mtime (the images, never rewritten; a
    review rewrites set.json, which must not make an old capture look new)."""
    times = [f.stat().st_mtime for f in folder.iterdir() if f.is_file()]
    return min(times) if times else folder.stat().st_mtime


def _remove(folder: Path) -> None:
    """Delete a capture folder so that no reader ever sees part of it: hide it, then delete."""
    hidden = folder.with_name(f".del-{folder.name}")
    try:
        os.rename(folder, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


class Recorder:
    def __init__(self, cfg: RecorderConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.dir)
        self._q: queue.Queue = queue.Queue(maxsize=cfg.queue)
        self._passes = 0
        self.recorded = 0
        self.skipped = 0
        self.stopped_reason: str | None = None
        self._index: list[tuple[float, Path, int]] = []  # (mtime, path, bytes), oldest first
        self._total = 0
        self._thread = threading.Thread(target=self._loop, name="afrd-recorder", daemon=True)

    def start(self) -> None:
        """Index the directory and start writing; a directory that cannot be created or read
        stops recording (``stopped_reason``), never inspection."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._scan()
        except OSError as exc:
            self._stop(f"cannot use {self.root}: {exc}")
        self._thread.start()

    def _scan(self) -> None:
        """Index the capture folders earlier runs left (``<product>/<day>/<part>/``, whole),
        oldest first; remove hidden leftovers of writes or deletions a crash cut short."""
        entries = []
        for folder in self.root.glob("*/*/*"):
            if not folder.is_dir():
                continue
            if folder.name.startswith("."):
                shutil.rmtree(folder, ignore_errors=True)
            elif not any(part.startswith(".") for part in folder.relative_to(self.root).parts):
                entries.append((_age(folder), folder, _size(folder)))
        entries.sort(key=lambda e: e[0])
        self._index = entries
        self._total = sum(e[2] for e in entries)

    def wants(self, verdict: str) -> bool:
        """Fails always, passes by a deterministic sample (k-th pass kept when the running
        share crosses an integer), errors never (no image set)."""
        if self.stopped_reason is not None:
            return False
        if verdict == "fail":
            return True
        if verdict == "pass":
            n = self._passes
            self._passes += 1
            r = self.cfg.pass_sample_rate
            return math.floor((n + 1) * r) > math.floor(n * r)
        return False

    def submit(self, imageset, result: dict) -> bool:
        if not self.wants(result.get("verdict", "error")):
            return False
        return self.put(imageset, result)

    def put(self, imageset, result: dict, on_written: Callable[[Path], None] | None = None) -> bool:
        """Queue a part ``wants`` already chose (the shadow run records its parts after the
        candidate judged them); ``on_written(folder)`` runs on the recorder's thread."""
        try:
            self._q.put_nowait((imageset, result, on_written))
            return True
        except queue.Full:
            self.skipped += 1
            log.warning("recorder: queue full, part %s not recorded", result.get("part_id"))
            return False

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self.stopped_reason is None:
                self._write(*item)

    def _write(self, imageset, result: dict, on_written: Callable[[Path], None] | None) -> None:
        from afrd.data.capture import write_capture

        try:
            free = shutil.disk_usage(self.root).free
            if free < self.cfg.min_free_bytes:
                self._stop(f"only {free} bytes free on {self.root} (< min_free_bytes)")
                return
            p = Path(write_capture(self.root, imageset, result))
            size = _size(p)
            self._index.append((time.time(), p, size))
            self._total += size
            self.recorded += 1
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._stop(f"disk full writing to {self.root}: {exc}")
            else:
                log.warning("recorder: could not record part %s: %s", result.get("part_id"), exc)
            return
        except Exception as exc:
            log.warning("recorder: could not record part %s: %s", result.get("part_id"), exc)
            return
        if on_written is not None:
            try:
                on_written(p)
            except Exception:  # the caller's bookkeeping; the capture is written
                log.exception("recorder: after writing %s", p)
        self.enforce_retention()

    def _stop(self, reason: str) -> None:
        self.stopped_reason = reason
        log.warning("recorder: recording stopped (%s); inspection goes on", reason)

    def enforce_retention(self) -> None:
        cutoff = time.time() - self.cfg.max_age_days * 86400
        while self._index and (self._total > self.cfg.max_bytes or self._index[0][0] < cutoff):
            _, p, size = self._index.pop(0)
            _remove(p)
            self._total -= size
            parent = p.parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    @property
    def total_bytes(self) -> int:
        return self._total

    def close(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            try:
                self._q.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout=timeout)
