"""The device kinds afrd.acquire ships, registered by its ``afrd.devices`` entry points
(pyproject.toml): GenICam cameras through harvesters, Gardasoft lighting controllers."""

from __future__ import annotations

from typing import Any

from afrd.acquire.gardasoft import GardasoftConfig, GardasoftController
from afrd.acquire.genicam import GenICamCamera, GenICamConfig
from afrd.acquire.registry import DeviceKind


def _genicam(config: GenICamConfig, devices: Any) -> GenICamCamera:
    # the cell's hardware trigger is the camera's line; otherwise afrd triggers each exposure
    return GenICamCamera(
        config, trigger="hardware" if devices.trigger == "hardware" else "software"
    )


def _genicam_shape(config: GenICamConfig) -> tuple[int, int, int] | None:
    if config.width is not None and config.height is not None:
        return (config.height, config.width, 3)
    return None


GENICAM = DeviceKind("camera", GenICamConfig, _genicam, frame_shape=_genicam_shape)
GARDASOFT = DeviceKind("controller", GardasoftConfig, lambda cfg, _: GardasoftController(cfg))
