"""Model bundles: the deployable unit (a directory), verified before anything runs it.

Layout::

    BUNDLE/
      bundle.json                 schema "afrd.bundle/1": lights, input, threshold, sha256 of files
      model.onnx                  uint8 [B,N,H,W,3] -> anomaly_map [B,H,W] f32, score [B] f32
      model.<gpu-slug>.engine     optional TensorRT engine (+ .engine.json: TensorRT version, GPU)
      model.<variant>.onnx        optional precision variants (fp16, int8 QDQ), each checked
                                  against model.onnx with its own threshold (bundle_variants)

A product registered to a reference pose declares it in ``preprocessing`` (a list of steps;
today one kind, ``{"step": "register", ...parameters, "reference": "registration.png"}``), with
the reference image a file of the bundle; every engine applies it before the graph
(``afrd.runtime.engines.base.Engine``). A bundle without ``preprocessing`` feeds frames as they
are.

``bundle.json`` is the only file not covered by a sha256 (it holds them), so the threshold can be
recalibrated in place (:meth:`Bundle.set_threshold`, an atomic rewrite) without re-exporting.
Torch-free: the daemon loads bundles on cells that have no torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import numbers
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afrd.errors import AfrdError, BundleError
from afrd.runtime.bundle_products import check_products, new_products
from afrd.runtime.bundle_variants import check_variants, threshold_slot

if TYPE_CHECKING:
    from afrd.data.register import Registration

log = logging.getLogger("afrd.runtime.bundle")

SCHEMA = "afrd.bundle/1"
BUNDLE_JSON = "bundle.json"
ONNX_FILE = "model.onnx"
# What the graph does to the uint8 input before the teacher (recorded, not applied by engines).
IMAGENET_NORMALIZATION: dict[str, Any] = {
    "scale": 1.0 / 255.0,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channel_order": "RGB",
    "inside_graph": True,
}
# A score threshold outside this range is a typo or an attack, never a calibration. Negative
# values are legal: normalised scores (per-pixel z-scores, the memory bank's per-light
# normalisation) put normal parts around 0, so a threshold calibrated at a high false-reject
# rate can fall below it.
THRESHOLD_RANGE = (-1e6, 1e6)


def check_threshold(value: Any, where: str) -> float:
    """``value`` as a threshold, or BundleError naming ``where`` and the expected value."""
    lo, hi = THRESHOLD_RANGE
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        raise BundleError(
            f"{where}: threshold {value!r}, expected a finite number in [{lo:g}, {hi:g}]"
        )
    return float(value)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (engine file names)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "gpu"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON next to ``path`` then rename over it: a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Bundle:
    """A verified bundle directory. Build one with :func:`create_bundle`, open one with
    :meth:`Bundle.load` (which checks schema, every sha256 and, if given, the cell's lights)."""

    path: Path
    meta: dict = field(repr=False)

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, expect_lights: Sequence[str] | None = None) -> Bundle:
        path = Path(path)
        js = path / BUNDLE_JSON
        if not path.is_dir():
            raise BundleError(f"bundle {path}: not a directory")
        if not js.is_file():
            raise BundleError(f"bundle {path}: missing {BUNDLE_JSON}")
        try:
            meta = json.loads(js.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"bundle {js}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise BundleError(f"bundle {js}: expected a JSON object")
        schema = meta.get("schema")
        if schema != SCHEMA:
            raise BundleError(
                f"bundle {js}: field 'schema' is {schema!r}, expected {SCHEMA!r} "
                f"(bundle written by a different afrd version?)"
            )
        _check_fields(js, meta)
        bundle = cls(path=path, meta=meta)
        bundle.verify()
        if expect_lights is not None:
            bundle.check_lights(expect_lights)
        if bundle.random_teacher:
            log.warning(
                "bundle %s: the teacher has RANDOM weights (no ImageNet pre-training): "
                "fine for tests and timing, useless for inspection",
                path,
            )
        return bundle

    def verify(self) -> None:
        """Every listed file exists and has its recorded sha256; model.onnx is listed."""
        files = self.meta.get("files") or {}
        if ONNX_FILE not in files:
            raise BundleError(
                f"bundle {self.path}: {BUNDLE_JSON} field 'files' lists no {ONNX_FILE}"
            )
        for name, rec in files.items():
            p = self.path / name
            if not p.is_file():
                raise BundleError(
                    f"bundle {self.path}: missing file {name} (listed in {BUNDLE_JSON})"
                )
            want = rec.get("sha256") if isinstance(rec, dict) else None
            got = sha256_file(p)
            if got != want:
                raise BundleError(
                    f"bundle {self.path}: file {name} sha256 mismatch: expected {want}, found {got} "
                    f"(file modified or corrupted after export)"
                )

    def check_lights(self, expect_lights: Sequence[str]) -> None:
        expect = tuple(expect_lights)
        if expect != self.lights:
            raise BundleError(
                f"bundle {self.path}: lights do not match the cell config: bundle expects "
                f"{list(self.lights)} (in this order), cell config has {list(expect)}"
            )

    # ---- accessors -----------------------------------------------------------------------------
    @property
    def lights(self) -> tuple[str, ...]:
        return tuple(entry["name"] for entry in self.meta["lights"])

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the graph expects."""
        h, w = self.meta["input"]["size"]
        return int(h), int(w)

    @property
    def threshold(self) -> float | None:
        value = (self.meta.get("threshold") or {}).get("value")
        return None if value is None else float(value)

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def sha256(self) -> str:
        """Identity of the model: the sha256 of model.onnx (what verdicts report)."""
        return self.meta["files"][ONNX_FILE]["sha256"]

    @property
    def registration(self) -> Registration | None:
        """The declared registration step (loaded once), or None when frames go in as they are."""
        if "_registration" not in self.__dict__:
            self.__dict__["_registration"] = self._load_registration()
        return self.__dict__["_registration"]

    def _load_registration(self) -> Registration | None:
        from afrd.data.register import Registration, decode_png

        steps = self.meta.get("preprocessing") or []
        reg = [s for s in steps if isinstance(s, dict) and s.get("step") == "register"]
        unknown = [s for s in steps if not (isinstance(s, dict) and s.get("step") == "register")]
        if unknown:
            raise BundleError(
                f"bundle {self.path}: {BUNDLE_JSON} field 'preprocessing' has steps this afrd "
                f"cannot apply: {unknown} (known: 'register')"
            )
        if not reg:
            return None
        step = reg[0]
        name = step.get("reference")
        if not name:
            raise BundleError(f"bundle {self.path}: the register step names no 'reference' file")
        try:
            ref = decode_png(self.file(name).read_bytes())
            return Registration.from_dict(step, reference=ref)
        except AfrdError as e:
            raise BundleError(f"bundle {self.path}: register step: {e}") from None

    @property
    def random_teacher(self) -> bool:
        return bool((self.meta.get("model") or {}).get("random_teacher"))

    def file(self, name: str) -> Path:
        if name not in self.meta["files"]:
            raise BundleError(f"bundle {self.path}: no file {name} in {BUNDLE_JSON}")
        return self.path / name

    # ---- changing a bundle ---------------------------------------------------------------------
    def save(self) -> None:
        write_json_atomic(self.path / BUNDLE_JSON, self.meta)

    def add_file(self, name: str, **info: Any) -> None:
        """Record (or re-record) a file already written into the bundle directory."""
        p = self.path / name
        if not p.is_file():
            raise BundleError(f"bundle {self.path}: cannot add {name}: file does not exist")
        self.meta["files"][name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size, **info}
        self.save()

    def set_threshold(
        self,
        value: float,
        statistics: dict | None = None,
        source: str = "manual",
        product: str | None = None,
        variant: str | None = None,
    ) -> None:
        """Store a new threshold (verdict = score > threshold) with where it came from: the
        bundle's, ``product``'s own in a multi-class bundle (afrd.runtime.bundle_products), or
        a checked precision ``variant``'s own (afrd.runtime.bundle_variants)."""
        slot, where = threshold_slot(self, product, variant)
        value = check_threshold(value, where)
        rec = {"value": value, "source": source, "set": utc_now()}
        slot["threshold"] = {**rec, "statistics": statistics or {}}
        self.save()


def _check_fields(js: Path, meta: dict) -> None:
    """The fields the runtime reads have the shapes it reads them as (BundleError naming the
    field and what was expected, never a TypeError later)."""

    def bad(key: str, expected: str) -> BundleError:
        got = repr(meta.get(key))[:80]
        return BundleError(f"bundle {js}: field {key!r} is {got}, expected {expected}")

    for key in ("lights", "input", "files"):
        if key not in meta:
            raise BundleError(f"bundle {js}: missing field {key!r}")
    lights = meta["lights"]
    if not (
        isinstance(lights, list)
        and lights
        and all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in lights)
    ):
        raise bad("lights", 'a non-empty list of {"name": "<light>"} objects')
    names = [e["name"] for e in lights]
    if len(set(names)) != len(names):
        raise bad("lights", "unique light names")
    size = meta["input"].get("size") if isinstance(meta["input"], dict) else None
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16384 for v in size)
    ):
        raise BundleError(
            f"bundle {js}: field 'input.size' is {size!r}, expected [height, width] in pixels"
        )
    files = meta["files"]
    if not isinstance(files, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("sha256"), str) for r in files.values()
    ):
        raise bad("files", '{"<file name>": {"sha256": "<hex>"}, ...}')
    for name in files:
        if Path(name).name != name or name.startswith("."):
            raise bad("files", f"plain file names inside the bundle (not {name!r})")
    thr = meta.get("threshold")
    if thr is not None and not isinstance(thr, dict):
        raise bad("threshold", '{"value": <number or null>, ...}')
    if thr and thr.get("value") is not None:
        check_threshold(thr["value"], f"bundle {js}: field 'threshold.value'")
    check_products(f"bundle {js}", meta, check_threshold)
    check_variants(f"bundle {js}", meta, check_threshold)
    steps = meta.get("preprocessing")
    if steps is not None and not isinstance(steps, list):
        raise bad("preprocessing", "a list of steps")


def create_bundle(
    out_dir: str | os.PathLike,
    *,
    lights: Sequence[str],
    input_size: tuple[int, int],
    model: dict,
    training: dict | None = None,
    name: str | None = None,
    normalization: dict | None = None,
    onnx: dict | None = None,
    extra: dict | None = None,
    files: Sequence[str] = (),
    products: Sequence[str] = (),
) -> Bundle:
    """Write bundle.json for a directory that already holds model.onnx (and ``files``, e.g. a
    registration reference), recording every file's sha256, and verify it."""
    from afrd import __version__

    out = Path(out_dir)
    onnx_path = out / ONNX_FILE
    if not onnx_path.is_file():
        raise BundleError(f"bundle {out}: missing file {ONNX_FILE}")
    h, w = (int(v) for v in input_size)
    meta: dict[str, Any] = {
        "schema": SCHEMA,
        "name": name or out.name,
        "afrd_version": __version__,
        "created": utc_now(),
        "lights": [{"index": i, "name": n} for i, n in enumerate(lights)],
        "input": {
            "name": "images",
            "dtype": "uint8",
            "layout": "BNHWC",
            "shape": ["batch", len(lights), h, w, 3],
            "size": [h, w],
        },
        "outputs": [
            {"name": "anomaly_map", "dtype": "float32", "shape": ["batch", h, w]},
            {"name": "score", "dtype": "float32", "shape": ["batch"]},
        ],
        "normalization": normalization or dict(IMAGENET_NORMALIZATION),
        "threshold": {"value": None, "source": "none", "statistics": {}},
        "model": dict(model),
        "training": dict(training or {}),
        "onnx": dict(onnx or {}),
        "files": {},
    }
    meta["model"]["random_teacher"] = bool(
        meta["model"].get("random_teacher")
        or str(meta["model"].get("teacher_weights", "")).lower() == "random"
    )
    if products:  # multi-class: a threshold per product, calibrated later
        meta["products"] = new_products(products)
    if extra:
        meta.update(extra)
    bundle = Bundle(path=out, meta=meta)
    for fname in (ONNX_FILE, *files):
        p = out / fname
        if not p.is_file():
            raise BundleError(f"bundle {out}: missing file {fname}")
        bundle.meta["files"][fname] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    bundle.save()
    return Bundle.load(out)
