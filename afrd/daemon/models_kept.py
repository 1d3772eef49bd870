"""The bundles a promotion replaced, kept in the state directory for ``rollback``.

``[models] dir`` (default /var/lib/afrd/models, the unit's StateDirectory) holds a copy of each
bundle that was live for a product before a ``promote`` (and of each promoted candidate, so the
running model never depends on a directory someone may overwrite), one folder per model
(``<name>-<sha256[:12]>``, files hard-linked where the filesystem allows, else copied), and
``history.json``: per product, the stack of models to roll back to with the threshold each was
judged by, the last ``[models] keep`` of them. ``rollback`` takes the top of its product's
stack. A kept folder (of ``copy``'s naming: nothing else in ``dir`` is touched) that no stack
entry, no running recipe and no bundle path of the config file names is deleted. Writes are atomic (temporary file or folder, then rename), so a crash leaves the
previous history or a hidden leftover, never half a bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from afrd.config.lifecycle import ModelsConfig
from afrd.errors import ConfigError
from afrd.runtime.bundle import utc_now, write_json_atomic

SCHEMA = "afrd.models/1"
_KEPT_NAME = re.compile(r"^(?:[A-Za-z0-9_.-]+-[0-9a-f]{12}|\.tmp-.+)$")  # copy()'s folders


@dataclass
class Kept:
    """One model a product was judged by: its kept copy and the threshold it ran with."""

    bundle: str  # the kept copy
    source: str  # the directory it was loaded from
    name: str
    sha256: str
    threshold: float
    kept: str  # when (UTC)

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bundle": self.bundle}


class KeptModels:
    def __init__(self, cfg: ModelsConfig) -> None:
        self.dir = Path(cfg.dir)
        self.keep_n = cfg.keep
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the store
    def copy(self, bundle: str | Path, name: str, sha256: str) -> Path:
        """``bundle`` in the store (a folder already there for this sha256 is reused)."""
        src = Path(bundle).resolve()
        if src.parent == self.dir.resolve():
            return src  # a kept copy already
        dest = self.dir / f"{_safe(name)}-{sha256[:12]}"
        if (dest / "bundle.json").is_file():
            return dest
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.dir))
        except OSError as exc:
            raise ConfigError(
                f"models.dir {self.dir}: cannot keep bundles there ({exc.strerror or exc}); "
                "set [models] dir to a writable directory (the unit's StateDirectory)"
            ) from None
        try:
            for f in src.rglob("*"):
                out = tmp / f.relative_to(src)
                if f.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(f, out)  # the same file, no copy: a bundle's files never change
                except OSError:
                    shutil.copy2(f, out)
            os.chmod(tmp, 0o755)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    # ------------------------------------------------------------------ history
    def _read(self) -> dict:
        try:
            doc = json.loads((self.dir / "history.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"schema": SCHEMA, "products": {}}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.dir / 'history.json'}: unreadable ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ConfigError(f"{self.dir / 'history.json'}: not an {SCHEMA} file")
        return doc

    def stack(self, product: str) -> list[Kept]:
        """The models ``product`` can roll back to, the next one last."""
        with self._lock:
            entries = self._read()["products"].get(product, [])
        return [Kept(**e) for e in entries]

    def push(self, product: str, entry: Kept) -> None:
        with self._lock:
            doc = self._read()
            stack = doc["products"].setdefault(product, [])
            stack.append(asdict(entry))
            del stack[: max(0, len(stack) - self.keep_n)]
            self._write(doc)

    def pop(self, product: str) -> None:
        with self._lock:
            doc = self._read()
            stack = doc["products"].get(product) or []
            if stack:
                stack.pop()
                self._write(doc)

    def _write(self, doc: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "history.json", doc)

    def prune(self, in_use: set[Path]) -> list[Path]:
        """Delete the kept folders nothing names any more (``in_use``: the running recipes'
        and the config file's bundles); hidden leftovers of an interrupted copy go too."""
        with self._lock:
            named = {
                Path(e["bundle"]).resolve() for s in self._read()["products"].values() for e in s
            }
        named |= {Path(p).resolve() for p in in_use}
        gone = []
        for folder in sorted(self.dir.iterdir()) if self.dir.is_dir() else []:
            # only what ``copy`` makes: a [models] dir set to a folder with other things in it
            # (the state directory itself) loses nothing else
            if not _KEPT_NAME.match(folder.name) or folder.is_symlink():
                continue
            if folder.is_dir() and folder.resolve() not in named:
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder)
        return gone


def kept_entry(bundle: Path, source: str, model: dict, threshold: float) -> Kept:
    return Kept(str(bundle), source, model["name"], model["sha256"], float(threshold), utc_now())


def _safe(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return out[:80] or "model"
