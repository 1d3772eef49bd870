"""Recorder: keeps image sets with their results on disk in the capture layout `afrd train` reads.

Every fail and error-free part's image set goes to ``afrd.data.capture.write_capture``: all fails,
a deterministic share ``pass_sample_rate`` of passes. Retention deletes the oldest captures until
the total is under ``max_bytes`` and nothing is older than ``max_age_days``. Writing runs on its
own thread behind a bounded queue, so a slow disk never stalls inspection; a full queue skips the
record (counted), a full disk (ENOSPC, or free space under ``min_free_bytes``) stops recording
with a warning while inspection goes on.
"""

from __future__ import annotations

import errno
import logging
import math
import queue
import shutil
import threading
import time
from pathlib import Path

from afrd.config.cell import RecorderConfig

log = logging.getLogger("afrd.daemon.recorder")


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


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
        """Index what earlier runs left (top-level entries under root except hidden ones)."""
        entries = []
        for p in self.root.rglob("*"):
            if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(self.root).parts
            ):
                entries.append((p.stat().st_mtime, p, p.stat().st_size))
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
        try:
            self._q.put_nowait((imageset, result))
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

    def _write(self, imageset, result: dict) -> None:
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
        self.enforce_retention()

    def _stop(self, reason: str) -> None:
        self.stopped_reason = reason
        log.warning("recorder: recording stopped (%s); inspection goes on", reason)

    def enforce_retention(self) -> None:
        cutoff = time.time() - self.cfg.max_age_days * 86400
        while self._index and (self._total > self.cfg.max_bytes or self._index[0][0] < cutoff):
            _, p, size = self._index.pop(0)
            try:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            except FileNotFoundError:
                pass
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
