"""The hardware-trigger sequence end to end on the simulated cell (docs/architecture.md,
"Hardware trigger"): part sensor -> the controller's trigger input -> strobe and camera trigger.

The controller emulator runs on its pseudo-terminal and is configured through the real Gardasoft
driver (``RTc,p,d,s``, ``RPc,i``, ``RSc,s``); the part sensor is a real datagram socket; the
camera's frame comes from the controller's camera-trigger output, so what it shows is exactly
the light the edge fired inside the camera's exposure window.
"""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
from _daemon_helpers import wait_for

from afrd.data import render as R
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.errors import FrameTimeout
from afrd.sim.cell import SimCell
from afrd.sim.config import SimControllerConfig, sim_lighting_conditions

pytestmark = pytest.mark.timeout(60)
SIZE = 32


def render(cell: SimCell, part_id: str, lamps: dict[str, float]) -> np.ndarray:
    return R.render(cell.parts.part(part_id), lamps, SIZE)


def test_a_sensor_edge_fires_its_inputs_pulses_and_the_camera(tmp_path) -> None:
    line = tmp_path / "sensor.sock"
    with (
        SimCell(trigger="hardware", line=line, size=SIZE, category="button") as cell,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sensor,
    ):
        ctl, emu, cam = cell.controller, cell.emulator, cell.camera
        assert cam.exposure_us == 1000  # the window the pulses below are placed against
        ctl.set_pulse(1, width_us=200, delay_us=0, level=80)  # ring_bottom: inside the window
        ctl.set_pulse(2, width_us=200, delay_us=900, level=100)  # ring_right: half inside
        ctl.set_pulse(4, width_us=200, delay_us=1500, level=100)  # ring_left: after it closes
        ctl.set_pulse(3, width_us=200, delay_us=0, level=60)  # ring_top, but on input 2:
        ctl.set_trigger_input(3, 2)
        ctl.set_continuous(5, 30)  # box_1 lit throughout
        assert "T2" in ctl.status()[3]["extra"]
        cam.start_part("P")

        # no part at the sensor: no frame, however long the camera waits (no timer behind it)
        with pytest.raises(FrameTimeout, match="no edge from the part sensor"):
            cam.grab(0.3)
        before = emu.triggers()

        sensor.sendto(b"\x01", str(line))  # the part reaches the sensor
        wait_for(lambda: emu.edges()[1] == 1, 5, "the edge at trigger input 1")
        fired = {c: n - before[c] for c, n in emu.triggers().items() if n != before[c]}
        assert fired == {1: 1, 2: 1, 4: 1}  # the pulse-mode channels on input 1, once each
        img = cam.grab(1.0)
        # ring_left's pulse came after the exposure closed, half of ring_right's inside it
        want = {"ring_bottom": 0.8, "ring_right": 0.5, "box_1": 0.3}
        np.testing.assert_array_equal(img, render(cell, "P", want))
        cam.start_part("Q")  # the next part needs its own edge
        with pytest.raises(FrameTimeout, match="no edge from the part sensor"):
            cam.grab(0.2)

        emu.input_edge(2)  # another device on input 2 fires ring_top only
        np.testing.assert_array_equal(
            cam.grab(1.0), render(cell, "Q", {"ring_top": 0.6, "box_1": 0.3})
        )
        assert emu.edges() == {1: 1, 2: 1, 3: 0, 4: 0}


def test_a_hardware_triggered_part_end_to_end(tmp_path) -> None:
    """The sequencer arms the first lighting and waits; the part's edge fires it (no software
    strobe for it); the other lightings are strobed by the sequencer as it steps through."""
    line = tmp_path / "sensor.sock"
    conds = sim_lighting_conditions(pulse_us=200)
    with (
        SimCell(
            controller=SimControllerConfig(timeout_s=0.5),
            trigger="hardware",
            line=line,
            size=SIZE,
            category="button",
            defect_rate=0.5,
        ) as cell,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sensor,
    ):
        emu = cell.emulator
        seq = cell.sequencer(conds, grab_timeout_s=5.0)
        out: list = []
        t = threading.Thread(target=lambda: out.append(seq.acquire("HW1", "button")))
        t.start()
        # armed: ring_all's four channels in pulse mode (its apply ends with RT4)
        wait_for(lambda: emu.state()[4].mode == "pulse", 5, "the first lighting armed")
        assert not [c for c in emu.commands if c.startswith("TR")]  # nothing fired yet
        sensor.sendto(b"\x01", str(line))
        t.join(10)
        assert out, "the part was not acquired"
        s = out[0]
        assert s.lights == DEFAULT_LIGHTS
        for k, name in enumerate(s.lights):
            np.testing.assert_array_equal(
                s.images[k], render(cell, "HW1", R.LIGHT_SETUPS[name]), err_msg=name
            )
        # ring_all by the edge (channels 1-4 on input 1), the rest by the sequencer's TRc
        trs = [c for c in emu.commands if c.startswith("TR")]
        assert sorted(trs) == sorted(["TR1", "TR2", "TR3", "TR4", "TR5", "TR6", "TR7", "TR8"])
        assert emu.triggers() == {1: 2, 2: 2, 3: 2, 4: 2, 5: 1, 6: 1, 7: 1, 8: 1}
        assert emu.edges()[1] == 1 and s.meta["flushed"] == 0
