"""The interface every camera implements (GenICam, simulated)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from afrd.errors import DeviceError


class Camera(ABC):
    """A camera that delivers RGB uint8 frames. ``grab`` always has a timeout."""

    name: str = "camera"

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def start_part(self, part_id: str) -> None:  # noqa: B027 - optional hook
        """A new part is in front of the camera. Real cameras ignore it; the simulated one
        renders that part from then on."""

    @property
    def has_trigger(self) -> bool:
        """True when ``trigger()`` starts an exposure (else the camera free-runs)."""
        return True

    def set_exposure(self, exposure_us: float) -> None:
        """Set the exposure time (per-lighting exposure calibration). Cameras without one raise."""
        raise DeviceError(f"{self.name}: camera has no exposure control")

    @abstractmethod
    def trigger(self) -> None:
        """Start one exposure (software trigger). No-op for free-running cameras."""

    @abstractmethod
    def grab(self, timeout_s: float = 1.0) -> np.ndarray:
        """The next frame as an HxWx3 uint8 RGB array; raises DeviceError after ``timeout_s``."""

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
