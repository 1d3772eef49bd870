"""Stale frames between parts (issue 21, item 11): a frame asked for by a part that failed
before grabbing it must not become the next part's first light.

The stale frame is made the way a cell makes one: the camera was triggered for a part's first
light, then the lighting controller's strobe for that light got no reply, so the part ended as
an ``error`` with its frame still on its way. Fresh or stale is told by the camera's frame id,
not by the image. Real devices throughout: the controller emulator on a pseudo-terminal behind
the Gardasoft driver, TLSimu (a GenTL producer) through harvesters, the simulated cell.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from _daemon_helpers import wait_for
from test_genicam_camera import camera, tlsimu_cti

from afrd.acquire.gardasoft import GardasoftConfig, GardasoftController
from afrd.acquire.sequencer import Sequencer
from afrd.data import render as R
from afrd.errors import DeviceError, FrameTimeout
from afrd.sim.cell import SimCell
from afrd.sim.config import SimControllerConfig, sim_lighting_conditions
from afrd.sim.emulator import ControllerEmulator

pytestmark = pytest.mark.timeout(60)

LIGHTS = ("ring_top", "box")  # two conditions: a stale first frame shifts the whole part
SIZE = 32


def wrong_lights(imageset, cell: SimCell) -> list[str]:
    """Lights whose image is not the renderer's image of that part under that light."""
    part = cell.parts.part(imageset.part_id)
    return [
        name
        for k, name in enumerate(imageset.lights)
        if not np.array_equal(R.render(part, R.LIGHT_SETUPS[name], SIZE), imageset.images[k])
    ]


def fail_at_strobe(seq: Sequencer, emu: ControllerEmulator, part_id: str, light: str) -> None:
    """Acquire a part whose ``light`` strobe (``TRc``) gets no reply: the exposure was asked
    for, the part fails before its grab, its frame is left to arrive late."""
    emu.inject("no_reply", count=1, command="TR")
    with pytest.raises(DeviceError, match=rf"part '{part_id}': light '{light}', step trigger"):
        seq.acquire(part_id)


def test_genicam_part_after_a_failed_part_gets_fresh_frames() -> None:
    cti = tlsimu_cti()
    conds = sim_lighting_conditions(LIGHTS, pulse_us=200)  # pulsed: the sequencer strobes
    with (
        ControllerEmulator() as emu,
        camera(cti, serial="SN_InterfaceA_0", width=32, height=32) as cam,
    ):
        ctl = GardasoftController(GardasoftConfig(port=emu.port, timeout_s=0.3))
        ctl.open()
        try:
            seq = Sequencer(ctl, cam, conds, grab_timeout_s=2.0)
            a = seq.acquire("A")
            last = a.meta["frame_ids"][-1]
            assert a.meta["frame_ids"] == [last - 1, last] and a.meta["flushed"] == 0
            fail_at_strobe(seq, emu, "B", "ring_top")
            # B's frame (id last + 1) has reached the producer's output queue
            stream = cam._ia.data_streams[0].module
            wait_for(lambda: stream.num_awaiting_delivery == 1, 5, "the failed part's frame")
            c = seq.acquire("C")
            # C's first light is exposed for C: B's frame was dropped, not handed to C
            assert c.meta["frame_ids"] == [last + 2, last + 3], c.meta["frame_ids"]
            assert c.meta["flushed"] == 1 and cam.flushed == 1
            assert stream.num_awaiting_delivery == 0  # nothing left for the part after C
        finally:
            ctl.close()


def test_genicam_flush_of_an_empty_queue_is_quick() -> None:
    with camera(tlsimu_cti(), serial="SN_InterfaceA_0", width=32, height=32) as cam:
        cam.trigger()
        wait_for(lambda: cam._ia.data_streams[0].module.num_awaiting_delivery == 1, 5, "a frame")
        assert cam.flush() == 1
        t0 = time.perf_counter()
        assert cam.flush() == 0
        assert time.perf_counter() - t0 < 0.05
        cam.trigger()
        cam.grab(2.0)
        assert cam.flushed == 1
    assert cam.flush() == 0  # closed: nothing queued, nothing to do


def test_sim_part_after_a_failed_part_gets_fresh_frames() -> None:
    with SimCell(
        LIGHTS, controller=SimControllerConfig(timeout_s=0.3), category="button", size=SIZE
    ) as cell:
        seq = cell.sequencer(sim_lighting_conditions(LIGHTS, pulse_us=200))
        a = seq.acquire("A")
        fail_at_strobe(seq, cell.emulator, "B", "ring_top")
        c = seq.acquire("C")
        last = a.meta["frame_ids"][-1]
        assert c.meta["frame_ids"] == [last + 2, last + 3] and c.meta["flushed"] == 1
        # and the images are C's under C's lights (B's frame was part B under ring_top)
        assert wrong_lights(c, cell) == []


def test_hardware_mode_keeps_a_part_that_came_between_two_arms(tmp_path) -> None:
    """An armed grab that timed out (no part came) asked for nothing: an edge right after it is
    the next part, queued while the cell re-arms, and must be imaged, not flushed."""
    line = tmp_path / "sensor.sock"
    with (
        SimCell(LIGHTS, trigger="hardware", line=line, size=SIZE) as cell,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sensor,
    ):
        seq = cell.sequencer(grab_timeout_s=0.2)
        with pytest.raises(FrameTimeout, match="no edge from the part sensor"):
            seq.acquire("idle")
        sensor.sendto(b"\x01", str(line))
        wait_for(lambda: cell.emulator.edges()[1] == 1, 5, "the edge at the controller")
        s = seq.acquire("P1")
        assert s.meta["flushed"] == 0 and cell.camera.flushed == 0
        assert wrong_lights(s, cell) == []


def test_hardware_mode_flushes_after_a_part_that_owes_a_frame(tmp_path) -> None:
    """A part that failed after asking for an exposure (its second light's strobe got no
    reply) may still get that frame: the next part starts with a flush, even in hardware mode,
    and takes its first frame from its own edge."""
    line = tmp_path / "sensor.sock"
    conds = sim_lighting_conditions(LIGHTS, pulse_us=200)
    with (
        SimCell(
            LIGHTS, SimControllerConfig(timeout_s=0.3), "hardware", line=line, size=SIZE
        ) as cell,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sensor,
    ):
        seq = cell.sequencer(conds, grab_timeout_s=5.0)
        emu, cam = cell.emulator, cell.camera
        done: list = []

        def acquire(part_id: str) -> threading.Thread:
            def run() -> None:
                try:
                    done.append(seq.acquire(part_id))
                except Exception as exc:
                    done.append(exc)

            t = threading.Thread(target=run)
            t.start()
            return t

        t = acquire("P1")
        wait_for(lambda: emu.state()[3].mode == "pulse", 5, "ring_top applied")
        # ring_top is fired by the edge (no TR); box is strobed by the sequencer: no reply
        emu.inject("no_reply", count=1, command="TR")
        sensor.sendto(b"\x01", str(line))
        t.join(10)
        assert isinstance(done[0], DeviceError), done
        assert "light 'box', step trigger" in str(done[0]), done
        sensor.sendto(b"\x01", str(line))  # a second edge (a bounce, a late strobe): queued
        wait_for(lambda: emu.edges()[1] == 2, 5, "the second edge")
        t = acquire("P2")
        wait_for(lambda: cam.flushed == 1, 5, "P2's flush")
        # armed: ring_top is set before the part arrives (else the edge fires box's pulses)
        armed = {3: "pulse", 5: "off"}  # RT3 is the apply's last command
        wait_for(lambda: {c: emu.state()[c].mode for c in armed} == armed, 5, "ring_top again")
        sensor.sendto(b"\x01", str(line))  # P2 reaches the sensor
        t.join(10)
        p2 = done[1]
        assert not isinstance(p2, Exception), p2
        assert p2.meta["flushed"] == 1
        assert wrong_lights(p2, cell) == []
