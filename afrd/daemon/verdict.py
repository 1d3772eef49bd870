"""The verdict and the messages that carry it: one place for what a part's result is.

``judge`` turns the engine's output into pass/fail (score > threshold fails; a non-finite score
is an ``error``), ``error_code`` maps a failure to its code by the exception's type,
``result_message``/``heatmap_message`` build what the publisher sends (the heatmap is a PNG
overlay of the anomaly map on the diffuse view), and ``parse_message`` with its validators
checks those messages (tests, `afrd watch`, MES code).

Topics (first frame): ``result.<cell>`` + JSON; ``heatmap.<cell>`` + JSON + PNG;
``status.<cell>`` + JSON (heartbeat, every second); opt-in ``lights.<cell>`` + JSON + JPEG
(a mosaic of the part's lights, afrd.daemon.lights). JSON is UTF-8, one object per frame.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from afrd.errors import AfrdError, DeviceError, RegistrationError

RESULT_SCHEMA = "afrd.result/1"
HEATMAP_SCHEMA = "afrd.heatmap/1"
STATUS_SCHEMA = "afrd.status/1"
LIGHTS_SCHEMA = "afrd.lights/1"
VERDICTS = ("pass", "fail", "error")
STATES = ("starting", "running", "paused", "reloading", "stopping")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

# error codes a result may carry (error.code)
ERROR_CODES = (
    "acquire",  # camera or controller fault while imaging the part
    "register",  # the image set could not be registered to the product's reference pose
    "infer",  # the engine raised
    "nan_score",  # the engine returned a non-finite score
    "overrun",  # the part could not be queued (the line triggers faster than we inspect)
    "shutdown",  # triggered, but the daemon stopped before imaging it
    "paused",  # triggered while inspection is paused
    "internal",  # a bug: anything else
    "unknown_product",  # the trigger's product names no [[product]] recipe of the cell
)


class UnknownProduct(AfrdError):
    """A trigger's product names no recipe of the cell (verdict ``error``/``unknown_product``)."""


# failure type -> code; anything else takes the code of the stage it failed in
_CODE_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (UnknownProduct, "unknown_product"),
    (RegistrationError, "register"),
    (DeviceError, "acquire"),
)


@dataclass
class Job:
    """One part on its way through the pipeline: what its verdict and messages are made of."""

    seq: int
    part_id: str
    product: str
    t_trigger: float  # perf_counter at trigger
    wall_trigger: float  # time.time() at trigger
    imageset: Any = None
    t_acquire: float | None = None  # seconds spent acquiring
    t_infer: float | None = None  # seconds the engine took
    score: float | None = None
    amap: np.ndarray | None = None
    threshold: float | None = None
    model: dict = field(default_factory=lambda: {"name": "", "sha256": ""})
    error: tuple[str, str] | None = None  # (code, message)
    verdict: str = "error"
    t_published: float | None = None
    started: bool = False  # reached the acquire stage (counts as in flight until published)
    armed: bool = False  # hardware trigger: imaged only if the camera's line fires
    recipe: Any = None  # afrd.daemon.recipes.Recipe the part is imaged and judged with
    book: Any = None  # the RecipeBook pinned while the part is imaged and inferred
    handed: bool = False  # passed on to the next stage (a stage that fails after needs no rescue)
    slot: bool = False  # holds one of the pipeline's result slots until it is published
    published: bool = False  # the result went to the sink (once, whatever fails after)
    finished: bool = False  # counted out of in_flight

    def fail(self, stage: str, exc: BaseException) -> None:
        """Record ``exc`` as this part's error, coded by its type (else by ``stage``)."""
        self.error = (error_code(exc, stage), describe(exc))


def error_code(exc: BaseException, stage: str) -> str:
    for kind, code in _CODE_BY_TYPE:
        if isinstance(exc, kind):
            return code
    return stage


def describe(exc: BaseException) -> str:
    if isinstance(exc, AfrdError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class EngineOutputError(AfrdError):
    """The engine answered, but not with one score and one [H, W] map (verdict ``error``/
    ``infer``): a broken graph or backend must not end the infer thread."""


def judge(job: Job, maps: Any, scores: Any, engine: str) -> None:
    """The verdict from the engine's output for one part: fail when score > threshold."""
    s, m = np.asarray(scores), np.asarray(maps)
    if s.size != 1 or m.ndim != 3 or m.shape[0] != 1 or 0 in m.shape:
        raise EngineOutputError(
            f"engine {engine} returned {s.size} score(s) and a map of shape {list(m.shape)}; "
            f"expected one score and one [1, H, W] map"
        )
    if not np.issubdtype(s.dtype, np.number) or not np.issubdtype(m.dtype, np.number):
        raise EngineOutputError(f"engine {engine} returned {s.dtype} scores, {m.dtype} maps")
    score = float(s.reshape(-1)[0])
    if not math.isfinite(score):
        job.error = ("nan_score", f"engine {engine} returned score {score}")
        return
    job.score = score
    job.amap = m[0]
    job.verdict = "fail" if score > job.threshold else "pass"


def utc_iso(t: float) -> str:
    """UNIX time -> '2026-11-23T11:40:00.123456Z'."""
    return (
        _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def _part_fields(schema: str, cell: str, job: Job) -> dict:
    """What the result and the heatmap message of one part both say."""
    return {
        "schema": schema,
        "cell": cell,
        "part_id": job.part_id,
        "product": job.product,
        "seq": job.seq,
        "timestamp": utc_iso(job.wall_trigger),
        "verdict": job.verdict,
        "score": job.score,
        "threshold": job.threshold,
    }


def result_message(cell: str, job: Job) -> dict:
    """The ``result.<cell>`` JSON of a published job (error verdict when it carries one)."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1e3, 3)

    total = None if job.t_published is None else job.t_published - job.t_trigger
    msg = {
        **_part_fields(RESULT_SCHEMA, cell, job),
        "latency_ms": {"acquire": ms(job.t_acquire), "infer": ms(job.t_infer), "total": ms(total)},
        "model": dict(job.model),
    }
    if job.verdict == "error":
        code, message = job.error or ("internal", "unknown error")
        msg["error"] = {"code": code, "message": message}
    return msg


def heatmap_message(cell: str, job: Job) -> tuple[dict, bytes] | None:
    """The overlay PNG (anomaly map coloured over the diffuse view) and its JSON."""
    if job.amap is None or job.imageset is None:
        return None
    png, h, w = overlay_png(job.imageset, job.amap, job.threshold or 0.0)
    msg = {
        **_part_fields(HEATMAP_SCHEMA, cell, job),
        "map_max": float(np.max(job.amap)) if np.all(np.isfinite(job.amap)) else None,
        "width": w,
        "height": h,
        "format": "png",
        "content": "overlay: jet colour map of the anomaly map (blue = baseline, "
        "red = at/above threshold) over the diffuse view",
    }
    return msg, png


def view_image(imageset: Any) -> np.ndarray:
    """The image a person looks at: the diffuse 'box' light when present, else the first."""
    lights = tuple(imageset.lights)
    i = lights.index("box") if "box" in lights else 0
    return imageset.images[i]


def overlay_png(imageset: Any, amap: np.ndarray, threshold: float) -> tuple[bytes, int, int]:
    import cv2

    img = view_image(imageset)
    h, w = img.shape[:2]
    m = np.nan_to_num(np.asarray(amap, dtype=np.float32))
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    # blue = the part's own baseline (5th percentile of its map), red = at or above threshold:
    # a red region is what makes the part fail
    lo = float(np.percentile(m, 5))
    hi = threshold if threshold > lo else max(float(m.max()), lo + 1e-6)
    m8 = np.clip((m - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    colour = cv2.applyColorMap(m8, cv2.COLORMAP_JET)  # BGR
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    out = cv2.addWeighted(bgr, 0.55, colour, 0.45, 0.0)
    ok, buf = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise AfrdError("could not encode heatmap PNG")
    return buf.tobytes(), h, w


class SchemaError(ValueError):
    """A message does not follow the afrd schema; the message says which field and why."""


def _need(msg: dict, key: str, types: type | tuple, where: str) -> Any:
    if key not in msg:
        raise SchemaError(f"{where}: missing field {key!r}")
    v = msg[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in _tuple(types)):
        raise SchemaError(f"{where}: field {key!r} has type {type(v).__name__}, expected {types}")
    return v


def _tuple(t: type | tuple) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def _timestamp(msg: dict, where: str) -> None:
    ts = _need(msg, "timestamp", str, where)
    if not ts.endswith("Z"):
        raise SchemaError(f"{where}: timestamp {ts!r} is not UTC ('Z' suffix)")
    try:
        _dt.datetime.fromisoformat(ts[:-1] + "+00:00")
    except ValueError:
        raise SchemaError(f"{where}: timestamp {ts!r} is not ISO-8601") from None


def _number_or_null(v: Any, key: str, where: str) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SchemaError(f"{where}: {key} must be a finite number or null, got {v!r}")


def _header(msg: Any, schema: str, where: str, cell: str | None) -> None:
    """A JSON object of ``schema`` for ``cell`` (any cell when None)."""
    if not isinstance(msg, dict):
        raise SchemaError(f"{where}: expected a JSON object")
    if msg.get("schema") != schema:
        raise SchemaError(f"{where}: schema is {msg.get('schema')!r}, expected {schema!r}")
    c = _need(msg, "cell", str, where)
    if cell is not None and c != cell:
        raise SchemaError(f"{where}: cell {c!r} on a topic for cell {cell!r}")


def validate_result(msg: dict, cell: str | None = None) -> dict:
    where = "result"
    _header(msg, RESULT_SCHEMA, where, cell)
    _need(msg, "part_id", str, where)
    _need(msg, "product", str, where)
    seq = _need(msg, "seq", int, where)
    if seq < 0:
        raise SchemaError(f"{where}: seq must be >= 0")
    _timestamp(msg, where)
    verdict = _need(msg, "verdict", str, where)
    if verdict not in VERDICTS:
        raise SchemaError(f"{where}: verdict {verdict!r} not one of {VERDICTS}")
    for key in ("score", "threshold"):
        if key not in msg:
            raise SchemaError(f"{where}: missing field {key!r}")
        _number_or_null(msg[key], key, where)
    if verdict != "error" and (msg["score"] is None or msg["threshold"] is None):
        raise SchemaError(f"{where}: a {verdict} verdict needs a score and a threshold")
    if verdict == "fail" and not msg["score"] > msg["threshold"]:
        raise SchemaError(f"{where}: fail but score {msg['score']} <= threshold {msg['threshold']}")
    if verdict == "pass" and msg["score"] > msg["threshold"]:
        raise SchemaError(f"{where}: pass but score {msg['score']} > threshold {msg['threshold']}")
    lat = _need(msg, "latency_ms", dict, where)
    for key in ("acquire", "infer", "total"):
        if key not in lat:
            raise SchemaError(f"{where}: latency_ms missing {key!r}")
        _number_or_null(lat[key], f"latency_ms.{key}", where)
    model = _need(msg, "model", dict, where)
    _need(model, "name", str, f"{where}.model")
    _need(model, "sha256", str, f"{where}.model")
    if verdict == "error":
        err = _need(msg, "error", dict, where)
        code = _need(err, "code", str, f"{where}.error")
        if code not in ERROR_CODES:
            raise SchemaError(f"{where}: error.code {code!r} not one of {ERROR_CODES}")
        _need(err, "message", str, f"{where}.error")
    elif "error" in msg:
        raise SchemaError(f"{where}: 'error' present on a {verdict} verdict")
    return msg


def _part_header(msg: Any, schema: str, where: str, cell: str | None) -> None:
    """The fields every per-part side message (heatmap, lights) starts with."""
    _header(msg, schema, where, cell)
    _need(msg, "part_id", str, where)
    _need(msg, "seq", int, where)
    _timestamp(msg, where)


def validate_heatmap(msg: dict, png: bytes, cell: str | None = None) -> dict:
    where = "heatmap"
    _part_header(msg, HEATMAP_SCHEMA, where, cell)
    for key in ("width", "height"):
        if _need(msg, key, int, where) <= 0:
            raise SchemaError(f"{where}: {key} must be > 0")
    _number_or_null(_need(msg, "map_max", (int, float), where), "map_max", where)
    if not png.startswith(PNG_MAGIC):
        raise SchemaError(f"{where}: second frame is not a PNG")
    return msg


def validate_lights(msg: dict, jpeg: bytes, cell: str | None = None) -> dict:
    where = "lights"
    _part_header(msg, LIGHTS_SCHEMA, where, cell)
    lights = _need(msg, "lights", list, where)
    if not lights or not all(isinstance(n, str) for n in lights):
        raise SchemaError(f"{where}: lights must be a non-empty list of names")
    for key in ("columns", "rows", "tile_width", "tile_height", "width", "height"):
        if _need(msg, key, int, where) <= 0:
            raise SchemaError(f"{where}: {key} must be > 0")
    if msg["columns"] * msg["rows"] < len(lights):
        raise SchemaError(f"{where}: {msg['columns']}x{msg['rows']} tiles for {len(lights)} lights")
    if not jpeg.startswith(JPEG_MAGIC):
        raise SchemaError(f"{where}: second frame is not a JPEG")
    return msg


def validate_status(msg: dict, cell: str | None = None) -> dict:
    where = "status"
    _header(msg, STATUS_SCHEMA, where, cell)
    _timestamp(msg, where)
    state = _need(msg, "state", str, where)
    if state not in STATES:
        raise SchemaError(f"{where}: state {state!r} not one of {STATES}")
    parts = _need(msg, "parts", dict, where)
    for v in VERDICTS:
        _need(parts, v, int, f"{where}.parts")
    return msg


def parse_message(frames: list[bytes]) -> tuple[str, str, dict, bytes | None]:
    """Validate one multipart message -> (kind, cell, json, image or None): the heatmap's PNG,
    the lights' JPEG. Raises SchemaError."""
    if len(frames) < 2:
        raise SchemaError(f"message has {len(frames)} frame(s), expected >= 2")
    topic = frames[0].decode("utf-8", "replace")
    kind, _, cell = topic.partition(".")
    if not cell:
        raise SchemaError(f"topic {topic!r} is not <kind>.<cell>")
    try:
        msg = json.loads(frames[1])
    except ValueError as exc:
        raise SchemaError(f"{topic}: JSON frame does not parse: {exc}") from None
    n_frames = {"result": 2, "heatmap": 3, "status": 2, "lights": 3}.get(kind)
    if n_frames is None:
        raise SchemaError(f"unknown topic kind {kind!r} in {topic!r}")
    if len(frames) != n_frames:
        raise SchemaError(f"{topic}: expected {n_frames} frames, got {len(frames)}")
    if kind == "heatmap":
        return kind, cell, validate_heatmap(msg, frames[2], cell), frames[2]
    if kind == "lights":
        return kind, cell, validate_lights(msg, frames[2], cell), frames[2]
    validate = validate_result if kind == "result" else validate_status
    return kind, cell, validate(msg, cell), None
