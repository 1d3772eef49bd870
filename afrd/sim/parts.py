"""The simulated cell's parts: deterministic synthetic parts by id, and the flat calibration
targets (``WHITE_TARGET``/``BLACK_TARGET`` part ids)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from afrd.acquire.camera import BLACK_TARGET, WHITE_TARGET
from afrd.errors import ConfigError
from afrd.sim.config import SimCameraConfig


def flat_target(size: int, albedo: float = 0.5):
    """A flat matte target of uniform ``albedo`` as a renderer Part: its image under a lamp is
    the lamp's illumination pattern (the ring lamps' fall-off across the field, i.e. what a
    flat-field calibration must remove)."""
    import numpy as np

    from afrd.data import render as R

    n = int(size)
    return R.Part(
        category="target",
        seed=0,
        height=np.zeros((n, n), np.float32),
        albedo=np.full((n, n, 3), albedo, np.float32),
        ks=np.zeros((n, n), np.float32),
        shininess=np.ones((n, n), np.float32),
        translucency=0.0,
        mask=np.zeros((n, n), np.uint8),
        label=0,
    )


def _seed(*parts: object) -> int:
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little")


class SimParts:
    """Deterministic synthetic parts of the camera config's category: the same (category, seed,
    part_id) is always the same part, defective with probability ``defect_rate`` (the renderer
    picks the defect from the id too), at the config's ``size`` (render at that size for the
    fastest frames) and ``pose`` ("fixtured": held in a nest, as on a line; "free": any rotation
    and place, as in the Eyecandies-like datasets)."""

    def __init__(self, config: SimCameraConfig, cache: int = 16) -> None:
        from afrd.data import render as R

        cats = list(R.CATEGORIES)
        if config.pose not in R.POSES:
            raise ConfigError(f"sim camera: pose {config.pose!r} is not one of {list(R.POSES)}")
        category = config.category if config.category is not None else cats[0]
        if category not in cats:
            raise ConfigError(f"sim camera: category {category!r} is not one of {cats}")
        self.config = config
        self.category = category
        self._cache: OrderedDict[str, object] = OrderedDict()
        self._cache_n = cache

    def _draw(self, part_id: str) -> tuple[int, bool]:
        s = _seed(self.category, self.config.seed, part_id)
        return s >> 1, (s & 0xFFFF) / 0x10000 < self.config.defect_rate

    def truth(self, part_id: str) -> int:
        """1 if the part is defective. Known without rendering it."""
        if str(part_id) in (WHITE_TARGET, BLACK_TARGET):
            return 0
        return int(self._draw(str(part_id))[1])

    def part(self, part_id: str):
        """The renderer's Part for ``part_id`` (cached: the Part keeps its per-lamp render terms,
        so re-imaging a recent part costs only the weighted sum)."""
        from afrd.data import render as R

        part_id = str(part_id)
        if part_id in self._cache:
            self._cache.move_to_end(part_id)
            return self._cache[part_id]
        if part_id in (WHITE_TARGET, BLACK_TARGET):
            p = flat_target(self.config.size, 0.5 if part_id == WHITE_TARGET else 0.0)
        else:
            seed, defective = self._draw(part_id)
            p = R.sample_part(
                self.category,
                seed,
                "any" if defective else None,
                self.config.size,
                self.config.pose,
            )
        self._cache[part_id] = p
        while len(self._cache) > self._cache_n:
            self._cache.popitem(last=False)
        return p
