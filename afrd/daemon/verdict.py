"""The verdict and the messages that carry it: one place for what a part's result is.

``judge`` turns the engine's output into pass/fail (score > threshold fails; a non-finite score
is an ``error``), ``error_code`` maps a failure to its code by the exception's type,
``result_message``/``heatmap_message`` build what the publisher sends (the heatmap is a PNG
overlay of the anomaly map on the diffuse view). Their contracts, and ``parse_message`` with
the validators that check them (tests, `afrd watch`, MES code), are the pydantic models of
``afrd.daemon.messages``, re-exported here for the code that builds and reads messages.

Topics (first frame): ``result.<cell>`` + JSON; ``heatmap.<cell>`` + JSON + PNG;
``status.<cell>`` + JSON (heartbeat, every second); opt-in ``lights.<cell>`` + JSON + JPEG
(a mosaic of the part's lights, afrd.daemon.lights). JSON is UTF-8, one object per frame.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from afrd.daemon.messages import (  # noqa: F401 - the message contracts, for this module's users
    ERROR_CODES,
    HEATMAP_SCHEMA,
    LIGHTS_SCHEMA,
    RESULT_SCHEMA,
    STATES,
    STATUS_SCHEMA,
    VERDICTS,
    SchemaError,
    parse_message,
    validate_heatmap,
    validate_lights,
    validate_result,
    validate_status,
)
from afrd.errors import AfrdError, DeviceError, RegistrationError


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
