"""The null engine's options (``afrd.runtime.engines.null``): none."""

from __future__ import annotations

from afrd.runtime.engines.options import EngineOptions


class NullOptions(EngineOptions):
    pass
