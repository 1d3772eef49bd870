"""Loading the engine a cell config names, with the lighting conditions its bundle needs."""

from __future__ import annotations

from afrd.acquire.lighting import LightingCondition
from afrd.config.cell import CellConfig
from afrd.daemon.systemd import Notifier
from afrd.runtime.loader import Runtime, load_runtime


def load_cell_runtime(
    cfg: CellConfig, notifier: Notifier | None = None
) -> tuple[Runtime, list[LightingCondition]]:
    """The runtime of the config's bundle and the lighting conditions in its lights' order
    (ConfigError, before the engine is opened, when the config does not light them all)."""
    conditions: list[LightingCondition] = []

    def check(lights: tuple[str, ...]) -> None:
        conditions[:] = cfg.conditions_for(lights, f"bundle {cfg.bundle.path}")

    def status(text: str) -> None:
        if notifier is not None:
            notifier.extend_timeout(300)
            notifier.status(text)

    e = cfg.engine
    rt = load_runtime(cfg.bundle.path, e.kind, e.open_options(), cfg.threshold, status, check)
    return rt, conditions
