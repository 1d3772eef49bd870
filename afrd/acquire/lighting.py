"""Lighting conditions (what the config names) and the interface every light controller implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChannelSetting(BaseModel):
    """One controller output: level in percent, strobed for ``pulse_us`` µs when set."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    channel: int = Field(ge=1, le=64)
    level: float = Field(ge=0.0, le=100.0)
    pulse_us: float | None = Field(default=None, gt=0.0, le=1_000_000.0)
    delay_us: float = Field(default=0.0, ge=0.0, le=1_000_000.0)


class LightingCondition(BaseModel):
    """A named set of channels switched on together; every channel not listed is off."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1)
    channels: list[ChannelSetting]

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, v: list[ChannelSetting]) -> list[ChannelSetting]:
        seen = [c.channel for c in v]
        dup = sorted({c for c in seen if seen.count(c) > 1})
        if dup:
            raise ValueError(f"channel(s) {dup} listed more than once")
        return v

    @property
    def pulsed(self) -> list[int]:
        """Channels this condition strobes (pulse mode) rather than holds on."""
        return [c.channel for c in self.channels if c.pulse_us is not None]


class LightController(ABC):
    """A lighting controller. ``apply`` leaves exactly the condition's channels on."""

    name: str = "lights"

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def apply(self, condition: LightingCondition) -> None:
        """Switch the condition's channels on (continuous or pulse) and every other channel off."""

    @abstractmethod
    def all_off(self) -> None: ...

    def strobe(self, condition: LightingCondition) -> None:  # noqa: B027 - optional hook
        """Fire the pulsed channels of ``condition`` (software trigger). No-op by default."""

    def __enter__(self) -> LightController:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
