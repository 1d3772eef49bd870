"""What a cell config says about simulated devices: their config models, the simulated cell's
channel wiring and the lighting conditions that wiring expresses (``afrd.sim.devices``
registers them as the ``sim`` camera and controller kinds)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from afrd.acquire.lighting import ChannelSetting, LightingCondition
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import ConfigError

# Channel wiring of the simulated cell: 1-4 = ring lamps bottom/right/top/left, 5-8 = box_1..4.
SIM_CHANNELS: dict[int, str] = {
    1: "ring_bottom",
    2: "ring_right",
    3: "ring_top",
    4: "ring_left",
    5: "box_1",
    6: "box_2",
    7: "box_3",
    8: "box_4",
}


class SimCameraConfig(BaseModel):
    """``[camera] kind = "sim"``: renders deterministic synthetic parts under the lit channels."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["sim"] = "sim"
    category: str | None = Field(None, description="afrd.data.render category; None = first")
    seed: int = 0
    defect_rate: float = Field(0.3, ge=0.0, le=1.0)
    size: int = Field(128, ge=16, le=2048)
    noise_seed: int | None = Field(
        None, description="None: noiseless frames; an int: the renderer's sensor noise"
    )
    pose: Literal["fixtured", "conveyor", "free"] = Field(
        "fixtured", description="parts held in a nest (line) or at any rotation (datasets)"
    )
    timeout_s: float = Field(2.0, gt=0, description="grab timeout")
    vignetting: float = Field(
        0.0,
        ge=0.0,
        le=0.9,
        description="lens fall-off: the corners this fraction darker than the centre (the "
        "fall-off map is scaled to mean 1); what `afrd calibrate flatfield` removes",
    )
    dark_offset: float = Field(
        0.0, ge=0.0, le=64.0, description="sensor black level in DN added to every frame"
    )
    line: Path | None = Field(
        None,
        description="the part sensor (trigger.mode hardware): a UNIX datagram socket, one "
        "datagram per part; it drives the emulated controller's trigger input 1, which strobes "
        "and fires the camera (with a real controller: the camera's line)",
    )
    lose_every: int | None = Field(
        None,
        ge=2,
        description="fault tests: every Nth exposure never arrives (the grab times out after "
        "timeout_s, as a frame lost on the cable does)",
    )
    lamp_decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="lamp ageing: the share of every lamp's intensity lost per 1,000 parts "
        "imaged (compounded: intensity x (1 - lamp_decay) ** (parts / 1000))",
    )
    smudge: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="a dirty lens: strength of a soft spot (a quarter of the frame across, off "
        "centre) where the image is veiled, blurred and dimmed",
    )


class SimControllerConfig(BaseModel):
    """``[controller] kind = "sim"``: the controller emulator on a pty, started in-process and
    driven by the real Gardasoft driver."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["sim"] = "sim"
    settle_s: float = Field(0.0, ge=0.0, le=10.0, description="wait after switching lights")
    timeout_s: float = Field(1.0, gt=0, description="the driver's wait for each reply")
    n_channels: int = Field(8, ge=1, le=64)
    error_every: int | None = Field(
        None, ge=2, description="fault tests: the emulator answers every Nth command with Err 3"
    )


def sim_lighting_conditions(
    lights: Sequence[str] = DEFAULT_LIGHTS, pulse_us: float | None = None
) -> list[LightingCondition]:
    """The renderer's ``LIGHT_SETUPS`` as controller conditions on ``SIM_CHANNELS`` (lamp
    intensity x 100 = level %)."""
    from afrd.data import render as R

    lamp_ch = {lamp: ch for ch, lamp in SIM_CHANNELS.items()}
    out = []
    for name in lights:
        if name not in R.LIGHT_SETUPS:
            raise ConfigError(f"sim cell: no light setup {name!r} (have {sorted(R.LIGHT_SETUPS)})")
        settings = []
        for lamp, intensity in R.LIGHT_SETUPS[name].items():
            if intensity <= 0:
                continue
            if lamp not in lamp_ch:
                raise ConfigError(f"sim cell: lamp {lamp!r} of {name!r} is wired to no channel")
            level = round(float(intensity) * 100.0, 3)
            if level > 100:
                raise ConfigError(f"sim cell: lamp {lamp!r} of {name!r} above 100 % ({level})")
            settings.append(ChannelSetting(channel=lamp_ch[lamp], level=level, pulse_us=pulse_us))
        out.append(LightingCondition(name=name, channels=sorted(settings, key=lambda s: s.channel)))
    return out
