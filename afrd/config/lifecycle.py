"""A model's life on the line, as the cell config sets it: ``[models]`` (where promoted and
rolled-back bundles are kept, how many, the shadow run's queue) and ``[drift]`` (the watch on
passed parts' scores against the calibration). The daemon's side: ``afrd.daemon.shadow``,
``afrd.daemon.models_kept``, ``afrd.daemon.drift``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelsConfig(_Strict):
    """``[models]``: the bundles a promotion replaced are copied into ``dir`` (hard links where
    it can) with their thresholds, the last ``keep`` of them, so ``rollback`` finds them even
    after a restart or once their own directory was overwritten."""

    dir: Path = Field(
        Path("/var/lib/afrd/models"), description="kept bundles and history.json (state directory)"
    )
    keep: int = Field(3, ge=1, le=50, description="bundles kept for rollback")
    shadow_queue: int = Field(
        4,
        ge=1,
        le=1000,
        description="parts waiting for the shadow candidate; a part that finds it full is "
        "skipped and counted (the candidate never holds up a verdict)",
    )

    def resolve_paths(self, base: Path) -> None:
        if not self.dir.is_absolute():
            self.dir = base / self.dir


class DriftConfig(_Strict):
    """``[drift]``: per product and model, the scores of the last ``window`` passed parts
    against the bundle's calibration statistics (PSI over its quantile bins, and the
    false-reject rate that shift implies); a warning in ``status`` and the journal when PSI
    reaches ``warn_psi`` or the implied false-reject rate ``warn_frr_factor`` times the
    calibrated one."""

    enabled: bool = True
    window: int = Field(
        500,
        ge=20,
        le=100_000,
        description="passed parts per product and model (a smaller window is noisier: at 200 "
        "a stable simulated cell came to 1.49 of the 1.5 FRR-factor level, at 500 to 1.38)",
    )
    min_parts: int = Field(
        100, ge=10, le=100_000, description="passed parts before the watch judges at all"
    )
    warn_psi: float = Field(0.25, gt=0, le=10.0, description="PSI that raises the warning")
    warn_frr_factor: float = Field(
        1.5,
        gt=1.0,
        le=100.0,
        description="implied / calibrated false-reject rate that raises the warning (below 2: "
        "the warning comes before the rate doubles)",
    )

    @model_validator(mode="after")
    def _judged_at_all(self) -> DriftConfig:
        if self.min_parts > self.window:  # the window never holds that many: it never judges
            raise ValueError(f"min_parts ({self.min_parts}) must not exceed window ({self.window})")
        return self
