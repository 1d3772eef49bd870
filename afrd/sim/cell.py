"""The simulated cell: controller emulator on a pty + the real Gardasoft driver + SimCamera.

Channel wiring (``SIM_CHANNELS``): 1-4 = ring lamps bottom/right/top/left, 5-8 = box_1..box_4.
``sim_lighting_conditions()`` expresses the renderer's six ``LIGHT_SETUPS`` (DEFAULT_LIGHTS) as
controller channels, so the daemon configures the sim cell exactly like a real one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from afrd.acquire.gardasoft import GardasoftController
from afrd.acquire.lighting import ChannelSetting, LightingCondition
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import ConfigError
from afrd.sim.camera import SimCamera
from afrd.sim.emulator import ControllerEmulator

SIM_CHANNELS: dict[int, str] = {
    1: "ring_bottom",
    2: "ring_right",
    3: "ring_top",
    4: "ring_left",
    5: "box_1",
    6: "box_2",
    7: "box_3",
    8: "box_4",
}
LAMP_CHANNEL: dict[str, int] = {lamp: ch for ch, lamp in SIM_CHANNELS.items()}
# Part id under which the simulated cell shows a flat, matte, uniform grey calibration target
# (what `afrd calibrate flatfield --sim` images); ``BLACK_TARGET`` is a black one.
WHITE_TARGET = "calib:white-target"
BLACK_TARGET = "calib:black-target"


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
    """Deterministic synthetic parts: the same (category, seed, part_id) is always the same part,
    defective with probability ``defect_rate`` (the renderer picks the defect from the id too).
    ``size``: the parts' native resolution (render it at that size for the fastest frames).
    ``pose``: afrd.data.render.POSES key; "fixtured" (default) is a part held in a nest, as on a
    line; "free" is a part at any rotation and place, as in the Eyecandies-like datasets."""

    def __init__(
        self,
        category: str | None = None,
        seed: int = 0,
        defect_rate: float = 0.3,
        size: int = 256,
        cache: int = 16,
        pose: str = "fixtured",
    ) -> None:
        from afrd.data import render as R

        cats = list(R.CATEGORIES)
        if pose not in R.POSES:
            raise ConfigError(f"sim camera: pose {pose!r} is not one of {list(R.POSES)}")
        self.pose = pose
        if category is None:
            category = cats[0]
        if category not in cats:
            raise ConfigError(f"sim camera: category {category!r} is not one of {cats}")
        if not 0.0 <= defect_rate <= 1.0:
            raise ConfigError(f"sim camera: defect_rate must be in [0, 1], got {defect_rate}")
        self.category = category
        self.seed = int(seed)
        self.defect_rate = float(defect_rate)
        self.size = int(size)
        self._cache: OrderedDict[str, object] = OrderedDict()
        self._cache_n = cache

    def _draw(self, part_id: str) -> tuple[int, bool]:
        s = _seed(self.category, self.seed, part_id)
        return s >> 1, (s & 0xFFFF) / 0x10000 < self.defect_rate

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
            p = flat_target(self.size, 0.5 if part_id == WHITE_TARGET else 0.0)
        else:
            seed, defective = self._draw(part_id)
            p = R.sample_part(
                self.category, seed, "any" if defective else None, self.size, self.pose
            )
        self._cache[part_id] = p
        while len(self._cache) > self._cache_n:
            self._cache.popitem(last=False)
        return p


def sim_lighting_conditions(
    lights: tuple[str, ...] | list[str] = DEFAULT_LIGHTS,
    channels: dict[int, str] | None = None,
    pulse_us: float | None = None,
) -> list[LightingCondition]:
    """The renderer's ``LIGHT_SETUPS`` as controller conditions (lamp intensity x 100 = level %)."""
    from afrd.data import render as R

    lamp_ch = {lamp: ch for ch, lamp in (channels or SIM_CHANNELS).items()}
    out = []
    for name in lights:
        if name not in R.LIGHT_SETUPS:
            raise ConfigError(f"sim cell: no light setup {name!r} (have {sorted(R.LIGHT_SETUPS)})")
        settings = []
        for lamp, intensity in R.LIGHT_SETUPS[name].items():
            if intensity <= 0:
                continue
            if lamp not in lamp_ch:
                raise ConfigError(f"sim cell: lamp {lamp!r} of {name!r} is wired to no channel")
            level = round(float(intensity) * 100.0, 3)
            if level > 100:
                raise ConfigError(f"sim cell: lamp {lamp!r} of {name!r} above 100 % ({level})")
            settings.append(ChannelSetting(channel=lamp_ch[lamp], level=level, pulse_us=pulse_us))
        out.append(LightingCondition(name=name, channels=sorted(settings, key=lambda s: s.channel)))
    return out


class SimCell:
    """Emulator + GardasoftController + SimCamera, opened together::

    with SimCell(size=64) as cell:
        images = cell.sequencer().acquire("part-1", "demo")
    """

    def __init__(
        self,
        category: str | None = None,
        seed: int = 0,
        defect_rate: float = 0.3,
        size: int = 128,
        n_channels: int = 8,
        timeout_s: float = 1.0,
        noise_seed: int | None = None,
        lights: tuple[str, ...] | list[str] = DEFAULT_LIGHTS,
        pose: str = "fixtured",
    ) -> None:
        self.parts = SimParts(category, seed, defect_rate, size=size, pose=pose)
        self.emulator = ControllerEmulator(n_channels=n_channels)
        self.size = size
        self.timeout_s = timeout_s
        self.noise_seed = noise_seed
        self.lights = tuple(lights)
        self.controller: GardasoftController | None = None
        self.camera: SimCamera | None = None

    def __enter__(self) -> SimCell:
        self.emulator.start()
        try:
            self.controller = GardasoftController(
                self.emulator.port, timeout=self.timeout_s, n_channels=self.emulator.n_channels
            )
            self.controller.open()
            self.camera = SimCamera(
                self.emulator, self.parts, self.size, noise_seed=self.noise_seed
            )
            self.camera.open()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.camera is not None:
            self.camera.close()
        if self.controller is not None:
            self.controller.close()
        self.emulator.stop()

    def conditions(self) -> list[LightingCondition]:
        return sim_lighting_conditions(self.lights)

    def sequencer(self, conditions: list[LightingCondition] | None = None, **kw):
        from afrd.acquire.sequencer import Sequencer

        assert self.controller is not None and self.camera is not None, "use SimCell as a context"
        return Sequencer(self.controller, self.camera, conditions or self.conditions(), **kw)
