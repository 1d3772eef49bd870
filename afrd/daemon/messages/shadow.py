"""A model's life on the line: the shadow candidate's result ``shadow.<cell>``
(``afrd.shadow/1``), the status sections of the drift watch and the shadow run, and what
``shadow_status``, ``promote`` and ``rollback`` answer (afrd.daemon.shadow, .drift,
.model_commands)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from afrd.daemon.messages.fields import (
    Absent,
    Count,
    ModelRef,
    Score,
    Timestamp,
    Verdict,
    closed_config,
)

SHADOW_SCHEMA = "afrd.shadow/1"
Rate = float | None


class LiveVerdict(BaseModel):
    """The live model's result of the same part, as ``result.<cell>`` published it."""

    model_config = closed_config()
    verdict: Literal["pass", "fail"]
    score: float
    threshold: float
    model: ModelRef


class ShadowError(BaseModel):
    model_config = closed_config()
    code: Literal["infer"]
    message: str


class ShadowLatency(BaseModel):
    model_config = closed_config()
    infer: float = Field(description="ms the candidate's engine took")


class Shadow(BaseModel):
    """``shadow.<cell>``: the candidate's verdict on a part the live model judged before (the
    part's fields are its result's; ``live``: that result's verdict). Published after the
    result, for the parts the candidate kept up with (the rest are counted as skipped)."""

    model_config = closed_config(populate_by_name=True)
    schema_: Literal["afrd.shadow/1"] = Field(alias="schema")
    cell: str
    part_id: str = Field(min_length=1)
    product: str
    seq: Count = Field(description="the live result's seq")
    timestamp: Timestamp = Field(description="the trigger time")
    verdict: Verdict
    score: Score
    threshold: float
    latency_ms: ShadowLatency
    model: ModelRef = Field(description="the candidate")
    live: LiveVerdict
    agree: bool = Field(description="verdict == live.verdict")
    error: Absent[ShadowError] = Field(default=None, description="only on an error verdict")

    @model_validator(mode="after")
    def _verdict_agrees(self) -> Shadow:
        v, s = self.verdict, self.score
        if (v == "error") != (self.error is not None):
            raise ValueError("an error verdict, and only one, carries 'error'")
        if v != "error" and (s is None or (v == "fail") != (s > self.threshold)):
            raise ValueError(f"{v} with score {s} and threshold {self.threshold}")
        if self.agree != (v == self.live.verdict):
            raise ValueError(f"agree is {self.agree} for {v} against live {self.live.verdict}")
        return self


class CandidateProcess(BaseModel):
    """The candidate's engine runs in a process of its own (afrd.runtime.isolated)."""

    model_config = closed_config()
    pid: int
    running: bool = Field(description="false: it ended; each part offered since is an error")


class ShadowSummary(BaseModel):
    """A shadow run's counts (``status``'s ``shadow``; what ``shadow_start`` answers)."""

    model_config = closed_config()
    active: bool
    product: str = Field(description="the product whose parts the candidate judges")
    model: ModelRef = Field(description="the candidate")
    threshold: float = Field(description="the candidate's own, from its bundle")
    bundle: str
    since: Timestamp = Field(description="when the run began (set.json meta.shadow.run)")
    process: CandidateProcess
    offered: Count = Field(description="parts handed to the run")
    compared: Count = Field(description="parts both models judged")
    skipped: Count = Field(description="parts the candidate had no time for")
    errors: Count = Field(description="parts the candidate could not judge")
    pending: Count = Field(
        description="parts offered and not yet judged; once the run stopped, never judged"
    )
    agreement: Rate = Field(description="share of compared parts with the same verdict")
    correlation: Rate = Field(description="Pearson correlation of the two scores")


class Side(BaseModel):
    model_config = closed_config()
    verdict: Verdict
    score: Score


class Disagreement(BaseModel):
    model_config = closed_config()
    seq: Count
    part_id: str
    capture: str | None = Field(description="the recorder's capture id (null: not recorded)")
    live: Side
    candidate: Side


class ModelErrors(BaseModel):
    model_config = closed_config()
    false_rejects: Count = Field(description="labelled good, failed")
    misses: Count = Field(description="labelled defective, passed")
    false_reject_rate: Rate
    miss_rate: Rate


class Labelled(BaseModel):
    """The run's recorded parts an operator reviewed (set.json ``label``)."""

    model_config = closed_config()
    parts: Count
    good: Count
    defective: Count
    live: ModelErrors
    candidate: ModelErrors


class ShadowReport(ShadowSummary):
    """``shadow_status``: the summary, the last disagreements, the reviewed parts."""

    disagreements: list[Disagreement] = Field(description="the last 100, oldest first")
    labelled: Labelled


class NoShadow(BaseModel):
    """``shadow_status`` when no candidate was ever shadowed since the start."""

    model_config = closed_config()
    active: Literal[False]


class ModelChange(BaseModel):
    """What ``promote`` and ``rollback`` answer: the model now judging the product."""

    model_config = closed_config()
    product: str
    model: ModelRef
    threshold: float
    bundle: str = Field(description="the kept copy it was opened from ([models] dir)")
    previous: ModelRef = Field(description="the model it replaced (kept for rollback)")
    persisted: bool
    config: Absent[str] = None
    persist_error: Absent[str] = None


class DriftInfo(BaseModel):
    """``status``'s ``drift``: one product, judged by ``model``: its passed parts' scores
    against the calibration statistics of the model's threshold (afrd.daemon.drift)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    model: ModelRef
    statistic: Literal["psi"]
    window: Count
    passed: Count = Field(description="passed parts in the window")
    psi: Rate = Field(description="population stability index (null: no calibration)")
    frr_calibrated: Rate = Field(description="the false-reject rate at the calibration")
    frr_implied: Rate = Field(description="the false-reject rate the drift implies")
    frr_factor: Rate = Field(description="frr_implied / frr_calibrated")
    note: Absent[str] = None
    warning: str | None = Field(description="over [drift] warn_psi or warn_frr_factor")
