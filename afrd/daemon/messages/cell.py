"""The cell's state: the heartbeat ``status.<cell>`` (``afrd.status/1``, whose body is the
control socket's ``status`` result), the MQTT link's last word ``offline`` on the same schema,
and the MQTT link's counts per product (``afrd.counts/1``). The status is open: an interface
may add its own section to it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from afrd.daemon.messages.fields import (
    Absent,
    Count,
    ModelRef,
    State,
    Timestamp,
    Verdict,
    closed_config,
)
from afrd.daemon.messages.shadow import DriftInfo, ShadowSummary


class Parts(BaseModel):
    """Parts published since start, by verdict."""

    model_config = closed_config()
    pass_: Count = Field(alias="pass")
    fail: Count
    error: Count


class RecipeInfo(BaseModel):
    """A ``[[product]]`` recipe as ``status`` reports it (lights..exposures: with a setup)."""

    model_config = closed_config()
    threshold: float
    model: ModelRef
    bundle: str
    lights: Absent[list[str]] = None
    flatfield: Absent[bool] = None
    exposures: Absent[dict[str, float]] = Field(default=None, description="µs per light")


class Recorder(BaseModel):
    model_config = closed_config()
    recorded: Count
    bytes: Count
    stopped: str | None = Field(description="why recording stopped (null: recording)")


class Endpoints(BaseModel):
    """Where the daemon listens; each PLC/plant interface adds its name -> endpoint."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, str]
    pub: str | None
    control: str | None
    metrics_port: int | None


class MqttLink(BaseModel):
    """The MQTT link's section of the status (``[mqtt]`` on): its connection and its on-disk
    queue of results the broker has not acknowledged."""

    model_config = ConfigDict(strict=True, extra="allow")
    connected: bool
    broker: str | None = Field(description="the broker it is connected to")
    queued: Count = Field(description="results waiting for the broker")
    queued_bytes: Count
    sent: Count = Field(description="results the broker acknowledged since start")
    dropped: Count = Field(description="oldest results dropped from a full queue")
    heatmaps_skipped: Count
    error: str | None = Field(description="the last connection problem (null: none)")


class StatusBody(BaseModel):
    """The control socket's ``status`` result; the heartbeat adds schema, cell and timestamp.
    Open: an interface may add its own section."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
    state: State
    uptime_s: float
    parts: Parts
    queues: dict[str, Count] = Field(description="pipeline queue depths")
    in_flight: Count
    idle_grabs: Count
    flushed_frames: Count = Field(description="late frames dropped before a part's first light")
    threshold: float | None = Field(description="the default recipe's")
    model: ModelRef | None
    engine: str | None
    trigger: str = Field(description="trigger mode")
    recipes: dict[str, RecipeInfo] = Field(description="[[product]] recipes by name")
    default_product: str | None
    heatmaps: bool
    recorder: Recorder | None
    drift: dict[str, DriftInfo] = Field(description="the drift watch by product ({}: off)")
    shadow: ShadowSummary | None = Field(description="the shadow run (null: none)")
    # each interface's own section (Interfaces.details()) comes here: MQTT's is known
    mqtt: Absent[MqttLink] = None
    endpoints: Endpoints


class Status(StatusBody):
    """``status.<cell>``: the heartbeat, every ``sockets.heartbeat_s``."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)
    schema_: Literal["afrd.status/1"] = Field(alias="schema")
    cell: str
    timestamp: Timestamp


class Offline(BaseModel):
    """The MQTT link's ``<root>/status`` when the cell is gone: the broker's last will
    (``reason``: connection lost) or the daemon's last word when it stops. Retained, so a
    subscriber that comes later sees the cell as offline."""

    model_config = closed_config(populate_by_name=True)
    schema_: Literal["afrd.status/1"] = Field(alias="schema")
    cell: str
    timestamp: Timestamp
    state: Literal["offline"]
    reason: str


# what "afrd.status/1" may hold: the heartbeat, or (on MQTT) the cell's offline notice
StatusMessage = Annotated[Status | Offline, Field(discriminator="state")]


class Counts(BaseModel):
    """The MQTT link's ``<root>/counts`` (retained): parts by product and verdict since the
    daemon started (``since``)."""

    model_config = closed_config(populate_by_name=True)
    schema_: Literal["afrd.counts/1"] = Field(alias="schema")
    cell: str
    timestamp: Timestamp
    since: Timestamp = Field(description="when the daemon started counting")
    products: dict[str, dict[Verdict, Count]] = Field(description="product -> verdict -> parts")
