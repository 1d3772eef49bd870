"""Held-out normal sets and the per-pixel map statistics fitted on them after training.

Shared by every trained model kind (``afrd train``'s AFRD and CAD students): the statistics
are fitted on normal parts the student never trained on (the ``val`` split by default), since
training parts are restored better than new ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from afrd.errors import DataError
from afrd.model.sets import normal_subset, open_sets


def held_out_normals(cfg, lights: tuple[str, ...]) -> list:
    """Normal sets of ``cfg.norm_split``; empty (with a warning later) when the split is absent."""
    try:
        sets = normal_subset(
            open_sets(cfg.data, cfg.norm_split, cfg.category, lights, cfg.image_size)
        )
    except DataError:
        return []
    return [sets[i] for i in range(len(sets))]


def fit_map_stats_or_warn(model, norm_sets: Sequence, source: str, lights, cfg) -> dict | None:
    """Fit the per-pixel map statistics, or say why the map stays un-normalised."""
    from afrd.model.mapnorm import MIN_SETS, fit_map_stats
    from afrd.model.sets import resize_set

    if len(norm_sets) < MIN_SETS:
        print(
            f"afrd train: warning: {len(norm_sets)} held-out normal sets in {source}; need "
            f"{MIN_SETS} to fit the per-pixel map statistics, so the anomaly map is not "
            "normalised (fit later with afrd.model.mapnorm.fit_checkpoint)",
            flush=True,
        )
        return None
    arrays = [resize_set(s, cfg.image_size, lights) for s in norm_sets]
    fit = getattr(model, "fit_map_stats", None)  # a model kind with its own maps fits itself
    info = fit(arrays) if fit is not None else fit_map_stats(model, arrays)
    return {"source": source, **info}
