"""Held-out normal sets and the per-pixel map statistics fitted on them after training.

Shared by every trained model kind (``afrd train``'s AFRD and CAD students): the statistics
are fitted on normal parts the student never trained on (the ``val`` split by default), since
training parts are restored better than new ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from afrd.errors import ConfigError, DataError
from afrd.model.sets import normal_subset, open_sets


class _Concat:
    """Several products' datasets read as one (``--multi-class``)."""

    def __init__(self, parts: Sequence) -> None:
        self.parts = list(parts)
        self.starts = [0]
        for p in self.parts:
            self.starts.append(self.starts[-1] + len(p))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = max(j for j, s in enumerate(self.starts[:-1]) if s <= i)
        return self.parts[k][i - self.starts[k]]


def resolve_categories(values, multi_class: bool) -> tuple[str | None, tuple[str, ...] | None]:
    """``(category, categories)`` of ``--category`` values: one category, or with
    ``--multi-class`` at least two (one student for all of them)."""
    from afrd import cliargs

    if not multi_class:
        return cliargs.one_category(values), None
    cats = cliargs.categories(values) or []
    if len(set(cats)) < 2:
        raise ConfigError(f"--multi-class needs two or more --category values, got {cats}")
    return None, tuple(dict.fromkeys(cats))


def open_normals(cfg, split: str, lights) -> Sequence:
    """Normal sets of ``split`` for ``cfg.category``, or of every one of ``cfg.categories``."""
    cats = getattr(cfg, "categories", None) or [cfg.category]
    parts = [normal_subset(open_sets(cfg.data, split, c, lights, cfg.image_size)) for c in cats]
    return parts[0] if len(parts) == 1 else _Concat(parts)


def held_out_normals(cfg, lights: tuple[str, ...]) -> list:
    """Normal sets of ``cfg.norm_split``; empty (with a warning later) when the split is absent."""
    try:
        sets = open_normals(cfg, cfg.norm_split, lights)
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
