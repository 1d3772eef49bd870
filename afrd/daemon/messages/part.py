"""The messages of one part: ``result.<cell>`` (``afrd.result/1``), ``heatmap.<cell>`` (JSON +
PNG) and the opt-in ``lights.<cell>`` (JSON + JPEG). Closed: an unknown field is an error."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from afrd.daemon.messages.fields import (
    ERROR_CODES,
    Absent,
    Count,
    ErrorCode,
    ModelRef,
    Score,
    Size,
    Timestamp,
    Verdict,
    closed_config,
)


class Latency(BaseModel):
    """Milliseconds from the trigger; null for a stage the part did not reach."""

    model_config = closed_config()
    acquire: float | None
    infer: float | None
    total: float | None


class ErrorInfo(BaseModel):
    """Why an ``error`` part was not judged."""

    model_config = closed_config()
    code: ErrorCode = Field(description="what failed: " + ", ".join(ERROR_CODES))
    message: str


class _PartFields(BaseModel):
    """What the result and the side messages of one part (heatmap, lights) all say."""

    model_config = closed_config(populate_by_name=True)
    schema_: str = Field(alias="schema")
    cell: str
    part_id: str = Field(min_length=1)
    product: str
    seq: Count = Field(description="one per trigger, from 0: a gap means a missed message")
    timestamp: Timestamp = Field(description="the trigger time")
    verdict: Verdict
    score: Score
    threshold: Score


# the cross-field rules JSON Schema can say; "fail needs score > threshold" it cannot
_RESULT_RULES = {
    "allOf": [
        {
            "if": {"properties": {"verdict": {"const": "error"}}},
            "then": {"required": ["error"]},
            "else": {"not": {"required": ["error"]}},
        },
        {
            "if": {"properties": {"verdict": {"enum": ["pass", "fail"]}}},
            "then": {"properties": {"score": {"type": "number"}, "threshold": {"type": "number"}}},
        },
    ]
}


class Result(_PartFields):
    """``result.<cell>``: one per triggered part, also when it could not be inspected. ``fail``:
    score > threshold; ``pass``: score <= threshold; ``error``: not judged, ``error`` says why."""

    model_config = closed_config(populate_by_name=True, json_schema_extra=_RESULT_RULES)
    schema_: Literal["afrd.result/1"] = Field(alias="schema")
    latency_ms: Latency
    model: ModelRef
    error: Absent[ErrorInfo] = Field(default=None, description="only on an error verdict")

    @model_validator(mode="after")
    def _verdict_agrees(self) -> Result:
        v, s, t = self.verdict, self.score, self.threshold
        if v == "error":
            if self.error is None:
                raise ValueError("an error verdict needs an 'error' object {code, message}")
            return self
        if "error" in self.model_fields_set:
            raise ValueError(f"'error' present on a {v} verdict")
        if s is None or t is None:
            raise ValueError(f"a {v} verdict needs a score and a threshold")
        if v == "fail" and not s > t:
            raise ValueError(f"fail but score {s} <= threshold {t}")
        if v == "pass" and s > t:
            raise ValueError(f"pass but score {s} > threshold {t}")
        return self


class Heatmap(_PartFields):
    """``heatmap.<cell>``: frame 2 of [topic, this JSON, PNG], after the part's result."""

    schema_: Literal["afrd.heatmap/1"] = Field(alias="schema")
    map_max: float | None = Field(description="the anomaly map's maximum (null: not finite)")
    width: Size
    height: Size
    format: Literal["png"]
    content: str = Field(description="what the PNG shows")


class Lights(_PartFields):
    """``lights.<cell>`` (opt-in): frame 2 of [topic, this JSON, JPEG], a mosaic of the part's
    lights, ``columns`` tiles a row, in ``lights`` order."""

    schema_: Literal["afrd.lights/1"] = Field(alias="schema")
    lights: list[str] = Field(min_length=1, description="light names, in tile order")
    columns: Size
    rows: Size
    tile_width: Size
    tile_height: Size
    width: Size
    height: Size
    format: Literal["jpeg"]

    @model_validator(mode="after")
    def _tiles_hold_lights(self) -> Lights:
        if self.columns * self.rows < len(self.lights):
            raise ValueError(f"{self.columns}x{self.rows} tiles for {len(self.lights)} lights")
        return self
