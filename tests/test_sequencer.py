"""The sequencer on the simulated cell: real emulator on a pty, real driver, the renderer.

Image k of an acquired set must equal the renderer's image of that part under lighting k; the
same check must catch a mis-wired lighting map."""

from __future__ import annotations

import numpy as np
import pytest

from afrd.acquire.lighting import ChannelSetting, LightingCondition
from afrd.data import render as R
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import DeviceError, FrameTimeout
from afrd.sim.cell import SimCell
from afrd.sim.config import (
    SIM_CHANNELS,
    SimCameraConfig,
    SimControllerConfig,
    sim_lighting_conditions,
)
from afrd.sim.parts import SimParts

SIZE = 48


def mismatched_lights(imageset, parts: SimParts, tol: int = 0) -> list[str]:
    """Lights whose image differs from the renderer's image of that part under that light."""
    part = parts.part(imageset.part_id)
    bad = []
    for k, name in enumerate(imageset.lights):
        ref = R.render(part, R.LIGHT_SETUPS[name], SIZE)
        if np.abs(ref.astype(np.int16) - imageset.images[k]).max() > tol:
            bad.append(name)
    return bad


@pytest.fixture(scope="module")
def cell():
    with SimCell(
        category="button",
        size=SIZE,
        defect_rate=0.5,
        controller=SimControllerConfig(timeout_s=0.3),
    ) as c:
        yield c


def test_image_k_is_the_render_under_lighting_k(cell):
    seq = cell.sequencer()
    for pid in ("a1", "a2"):
        s = seq.acquire(pid, "button")
        assert s.lights == DEFAULT_LIGHTS and s.images.shape == (6, SIZE, SIZE, 3)
        assert mismatched_lights(s, cell.parts) == []
        # and the six images really are different views, not one frame six times
        assert len({s.images[k].tobytes() for k in range(6)}) == 6


def test_miswired_lighting_map_is_caught(cell):
    conds = sim_lighting_conditions()
    swap = {1: 2, 2: 1}  # ring_bottom and ring_right wired to each other's channel

    def rewire(c: LightingCondition) -> LightingCondition:
        return LightingCondition(
            name=c.name,
            channels=[
                s.model_copy(update={"channel": swap.get(s.channel, s.channel)}) for s in c.channels
            ],
        )

    s = cell.sequencer([rewire(c) for c in conds]).acquire("a1", "button")
    assert mismatched_lights(s, cell.parts) == ["ring_bottom", "ring_right"]


def test_lights_left_on_are_caught(cell):
    """A condition that forgets nothing but lights one extra lamp gives a wrong image."""
    conds = sim_lighting_conditions()
    extra = LightingCondition(
        name="ring_top", channels=[*conds[3].channels, ChannelSetting(channel=5, level=30)]
    )
    s = cell.sequencer([*conds[:3], extra, *conds[4:]]).acquire("a3", "button")
    assert mismatched_lights(s, cell.parts) == ["ring_top"]


def test_conditions_match_setups_and_channel_map():
    conds = {c.name: c for c in sim_lighting_conditions()}
    assert list(conds) == list(DEFAULT_LIGHTS)
    for name, cond in conds.items():
        lamps = {SIM_CHANNELS[s.channel]: s.level / 100 for s in cond.channels}
        assert lamps == pytest.approx(R.LIGHT_SETUPS[name])


def test_timings_and_timestamps(cell):
    s = cell.sequencer(settle_s=0.002).acquire("t1", "button")
    t = s.meta["timings"]
    assert set(t["per_light"]) == set(DEFAULT_LIGHTS)
    for step in ("apply", "settle", "trigger", "grab", "correct"):
        assert t[step] == pytest.approx(sum(v[step] for v in t["per_light"].values()))
    assert t["settle"] >= 6 * 0.002
    assert t["total"] >= t["apply"] + t["settle"] + t["trigger"] + t["grab"]
    assert len(s.timestamps) == 6 and s.timestamps == sorted(s.timestamps)


def test_ground_truth_is_deterministic(cell):
    parts = SimParts(SimCameraConfig(category="button", seed=0, defect_rate=0.5, size=SIZE))
    labels = [parts.truth(f"p{i}") for i in range(40)]
    assert 5 < sum(labels) < 35
    assert labels == [parts.truth(f"p{i}") for i in range(40)]
    s = cell.sequencer().acquire("p3", "button")
    assert s.label == parts.truth("p3")
    assert s.mask.shape == (SIZE, SIZE) and (s.mask.any() == bool(s.label))


def test_sensor_noise_is_seedable():
    with SimCell(category="plate", size=SIZE, noise_seed=7) as c1:
        a = c1.sequencer().acquire("n1")
    with SimCell(category="plate", size=SIZE, noise_seed=7) as c2:
        b = c2.sequencer().acquire("n1")
    np.testing.assert_array_equal(a.images, b.images)
    ref = np.stack([R.render(c1.parts.part("n1"), R.LIGHT_SETUPS[n], SIZE) for n in a.lights])
    diff = np.abs(a.images.astype(np.int16) - ref)
    assert diff.max() > 0  # noise is there
    assert diff.mean() < 4  # and only noise
    assert mismatched_lights(a, c1.parts, tol=25) == []


def test_pulsed_conditions_strobe_each_channel(cell):
    conds = sim_lighting_conditions(pulse_us=200)
    before = cell.emulator.triggers()
    s = cell.sequencer(conds).acquire("s1", "button")
    after = cell.emulator.triggers()
    fired = {ch: after[ch] - before[ch] for ch in after}
    # channels 1-4 fire in ring_all and in their own light; 5-8 in box
    assert fired == {1: 2, 2: 2, 3: 2, 4: 2, 5: 1, 6: 1, 7: 1, 8: 1}
    assert mismatched_lights(s, cell.parts) == []


def test_corrections_are_applied_per_light(cell):
    inv = {"ring_top": lambda im: 255 - im}
    s = cell.sequencer(corrections=inv).acquire("c1", "button")
    assert mismatched_lights(s, cell.parts) == ["ring_top"]
    ref = R.render(cell.parts.part("c1"), R.LIGHT_SETUPS["ring_top"], SIZE)
    np.testing.assert_array_equal(s.images[3], 255 - ref)


def test_controller_fault_names_light_and_step(cell):
    seq = cell.sequencer()
    seq.acquire("f0", "button")  # the cache now holds box; ring_all must send commands
    cell.emulator.inject("no_reply")
    with pytest.raises(DeviceError, match=r"part 'f1': light 'ring_all', step apply: .*no reply"):
        seq.acquire("f1", "button")
    cell.emulator.inject("err", code=6)
    with pytest.raises(DeviceError, match=r"light 'ring_all', step apply: .*Err 6 \(output fault"):
        seq.acquire("f2", "button")
    s = seq.acquire("f3", "button")  # and the next part is fine
    assert mismatched_lights(s, cell.parts) == []


def test_lost_port_fails_the_part_then_recovers():
    with SimCell(size=SIZE, controller=SimControllerConfig(timeout_s=0.3)) as c:
        c.controller.backoff_min = c.controller._backoff = 0.05
        seq = c.sequencer()
        seq.acquire("l0")
        c.emulator.close_port()
        with pytest.raises(DeviceError, match=r"light 'ring_all', step apply: .*lost during"):
            seq.acquire("l1")
        c.emulator.reopen_port()
        c.controller.reconnect(wait_s=3)
        s = seq.acquire("l2")
        assert mismatched_lights(s, c.parts) == []


def test_camera_failure_names_grab_step(cell):
    seq = cell.sequencer(grab_timeout_s=0.05)
    cell.camera.close()
    try:
        with pytest.raises(DeviceError, match=r"light 'ring_all', step trigger: .*closed camera"):
            seq.acquire("g1")
    finally:
        cell.camera.open()
    # a camera that was never triggered times out in grab
    cell.camera.start_part("g2")
    with pytest.raises(FrameTimeout, match="no frame within 0.05 s"):
        cell.camera.grab(0.05)
