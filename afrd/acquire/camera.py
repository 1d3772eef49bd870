"""The interface every camera implements (GenICam, simulated)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from afrd.errors import DeviceError

# Part ids under which a camera shows the flat calibration targets (`afrd calibrate`): the
# simulated camera renders a flat matte grey (white) or black target; a real camera images
# whatever the operator put in front of it and ignores the id.
WHITE_TARGET = "calib:white-target"
BLACK_TARGET = "calib:black-target"


class Camera(ABC):
    """A camera that delivers RGB uint8 frames. ``grab`` always has a timeout.

    ``flushed`` counts the frames ``flush`` dropped (late or unrequested frames found queued at
    the start of a part), for status reports; ``last_frame_id`` is the device's id of the frame
    ``grab`` last returned (None when the device gives none), to tell a fresh frame from a
    stale one without looking at its content."""

    name: str = "camera"
    flushed: int = 0
    last_frame_id: int | None = None

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def start_part(self, part_id: str) -> None:  # noqa: B027 - optional hook
        """A new part is in front of the camera. Real cameras ignore it; the simulated one
        renders that part from then on (WHITE_TARGET/BLACK_TARGET: a calibration target)."""

    @property
    def has_trigger(self) -> bool:
        """True when ``trigger()`` starts an exposure (else the camera free-runs)."""
        return True

    @property
    def line_triggered(self) -> bool:
        """True in hardware-trigger mode: a part's first exposure is started by the part sensor
        through the camera's trigger line, not by afrd (docs/architecture.md, Hardware trigger)."""
        return False

    def flush(self) -> int:
        """Drop every frame already queued (a late frame of a part whose grab timed out, an
        unrequested exposure) so the next grab returns a frame exposed from now on; returns
        how many were dropped and adds them to ``flushed``. Cameras that queue nothing: 0."""
        return 0

    def set_exposure(self, exposure_us: float) -> None:
        """Set the exposure time (per-lighting exposure calibration). Cameras without one raise."""
        raise DeviceError(f"{self.name}: camera has no exposure control")

    @abstractmethod
    def trigger(self) -> None:
        """Start one exposure (software trigger). No-op for free-running cameras."""

    @abstractmethod
    def grab(self, timeout_s: float = 1.0) -> np.ndarray:
        """The next frame as an HxWx3 uint8 RGB array; raises FrameTimeout after ``timeout_s``
        without one (in hardware-trigger mode: no part came), DeviceError on a fault."""

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
