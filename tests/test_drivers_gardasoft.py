"""The Gardasoft driver against the emulator over a real pseudo-terminal: every command, every
injected fault, a lost and re-plugged port."""

from __future__ import annotations

import re
import threading
import time

import pytest
from pydantic import ValidationError

from afrd.acquire.gardasoft import GardasoftConfig, GardasoftController
from afrd.acquire.gardasoft_protocol import ERROR_CODES
from afrd.acquire.lighting import ChannelSetting, LightingCondition
from afrd.errors import ConfigError, DeviceError
from afrd.sim.emulator import ControllerEmulator


@pytest.fixture
def emu():
    with ControllerEmulator(n_channels=8) as e:
        yield e


@pytest.fixture
def ctl(emu):
    c = GardasoftController(GardasoftConfig(port=emu.port, timeout_s=0.3, backoff_s=(0.05, 0.2)))
    c.open()
    yield c
    c.close()


def cond(name: str, *settings: tuple) -> LightingCondition:
    chans = []
    for s in settings:
        ch, level, *pulse = s
        chans.append(ChannelSetting(channel=ch, level=level, pulse_us=pulse[0] if pulse else None))
    return LightingCondition(name=name, channels=chans)


def test_handshake_reads_version(emu, ctl):
    assert ctl.version == emu.version
    assert ctl.read_version() == emu.version
    assert emu.commands[0] == "VR"


def test_continuous_and_pulse_commands(emu, ctl):
    ctl.set_continuous(2, 37.5)
    assert emu.lit() == {2: 37.5}
    ctl.set_pulse(5, 120, 10, 80)
    st = emu.state()[5]
    assert (st.mode, st.level, st.pulse_us, st.delay_us) == ("pulse", 80, 120, 10)
    assert emu.lit() == {2: 37.5, 5: 80}
    assert emu.lit(include_pulsed=False) == {2: 37.5}
    ctl.set_trigger_input(5, 3)
    assert emu.state()[5].trigger_input == 3
    ctl.software_trigger(5)
    ctl.software_trigger(5)
    assert emu.triggers()[5] == 2
    status = ctl.status()
    assert status[2] == {"mode": "continuous", "level": 37.5, "extra": ""}
    assert status[5]["mode"] == "pulse" and "W120" in status[5]["extra"]
    assert status[1]["mode"] == "off"
    ctl.set_continuous(2, 0)
    assert 2 not in emu.lit()


def test_errors_name_command_and_meaning(emu, ctl):
    with pytest.raises(DeviceError, match=r"'RS9,50' failed: Err 4 \(no such channel\)"):
        ctl.set_continuous(9, 50)
    assert ctl.last_error() == 4
    with pytest.raises(DeviceError, match=r"Err 3 \(parameter out of range\)"):
        ctl.command("RS1,150")
    with pytest.raises(DeviceError, match=r"Err 1 \(unknown command\)"):
        ctl.command("XX1")
    with pytest.raises(DeviceError, match=r"Err 2 \(wrong number of parameters\)"):
        ctl.command("RS1")
    with pytest.raises(DeviceError, match=r"Err 5 .*mode"):
        ctl.software_trigger(1)  # channel 1 is not in pulse mode
    with pytest.raises(DeviceError, match=r"Err 7 \(trigger input out of range\)"):
        ctl.set_trigger_input(1, 9)


def test_apply_switches_exactly_the_condition(emu, ctl):
    emu_lit = emu.lit
    ctl.apply(cond("a", (1, 50), (6, 20, 100.0)))
    assert emu_lit() == {1: 50, 6: 20}
    assert emu.state()[6].mode == "pulse"
    ctl.apply(cond("b", (3, 10)))
    assert emu_lit() == {3: 10}
    # A channel lit behind the driver's back (another tool on the port) is still switched off
    # once the cache is dropped by an error.
    ctl.command("RS8,99")
    with pytest.raises(DeviceError):
        ctl.command("RS8,101")
    ctl.apply(cond("b", (3, 10)))
    assert emu_lit() == {3: 10}
    ctl.all_off()
    assert emu_lit() == {}


def test_apply_without_cache_resends_everything(emu):
    c = GardasoftController(GardasoftConfig(port=emu.port, timeout_s=0.3, cache=False))
    c.open()
    try:
        n0 = len(emu.commands)
        c.apply(cond("a", (1, 50)))
        c.apply(cond("a", (1, 50)))
        assert len(emu.commands) - n0 == 16
    finally:
        c.close()


def test_apply_rejects_missing_channel(ctl):
    with pytest.raises(ConfigError, match="channel 12 does not exist"):
        ctl.apply(cond("x", (12, 50)))


def test_condition_model_forbids_unknown_keys_and_duplicates():
    with pytest.raises(ValidationError):
        ChannelSetting(channel=1, level=50, colour="red")
    with pytest.raises(ValidationError):
        ChannelSetting(channel=1, level=150)
    with pytest.raises(ValidationError, match="more than once"):
        LightingCondition(
            name="d", channels=[{"channel": 1, "level": 5}, {"channel": 1, "level": 6}]
        )


def test_fault_no_reply_times_out_then_recovers(emu, ctl):
    emu.inject("no_reply")
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"no reply to 'VR' within 0.3 s"):
        ctl.command("VR")
    assert time.monotonic() - t0 < 1.0
    assert ctl.command("VR") == emu.version


def test_fault_garbled(emu, ctl):
    emu.inject("garbled")
    with pytest.raises(DeviceError, match="garbled reply to 'RS1,10'"):
        ctl.set_continuous(1, 10)
    ctl.set_continuous(1, 10)
    assert emu.lit() == {1: 10}


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_fault_err_codes(emu, ctl, code):
    emu.inject("err", code=code)
    msg = re.escape(f"'RS1,10' failed: Err {code} ({ERROR_CODES[code]})")
    with pytest.raises(DeviceError, match=msg):
        ctl.set_continuous(1, 10)
    assert emu.lit() == {}  # an errored command changes nothing
    assert ctl.last_error() == code


def test_unknown_error_code_is_still_reported(emu, ctl):
    emu.inject("err", code=42)
    with pytest.raises(DeviceError, match="Err 42 \\(unknown error code 42\\)"):
        ctl.command("VR")


def test_persistent_fault_until_cleared(emu, ctl):
    emu.inject("err", count=None, code=9)
    for _ in range(3):
        with pytest.raises(DeviceError, match="internal controller error"):
            ctl.command("VR")
    emu.clear_faults()
    assert ctl.command("VR") == emu.version


def test_port_closed_fails_then_reconnects(emu, ctl):
    ctl.apply(cond("a", (1, 50)))
    emu.close_port()
    with pytest.raises(DeviceError, match="lost during"):
        ctl.apply(cond("b", (2, 50)))
    assert not ctl.connected
    # While unplugged every call fails fast, naming the port, never hangs.
    t0 = time.monotonic()
    for _ in range(5):
        with pytest.raises(DeviceError, match=r"ttyLIGHT0"):
            ctl.command("VR")
        time.sleep(0.03)
    assert time.monotonic() - t0 < 2.0
    emu.reopen_port()
    ctl.reconnect(wait_s=3.0)
    assert ctl.connected and ctl.lost_reason is None
    ctl.apply(cond("b", (2, 50)))  # state cache was dropped: everything re-sent
    assert emu.lit() == {2: 50}


def test_reconnect_backoff_grows(emu, ctl):
    emu.close_port()
    with pytest.raises(DeviceError):
        ctl.command("VR")
    waits = []
    for _ in range(4):
        time.sleep(max(0.0, ctl._next_attempt - time.monotonic()) + 0.005)
        t = time.monotonic()
        with pytest.raises(DeviceError, match="cannot open"):
            ctl.command("VR")
        waits.append(ctl._next_attempt - t)
    assert waits[-1] > waits[0]
    assert max(waits) <= 0.2 + 0.05


def test_no_controller_on_port(tmp_path):
    c = GardasoftController(GardasoftConfig(port=str(tmp_path / "nothing"), timeout_s=0.2))
    with pytest.raises(DeviceError, match="cannot open lighting controller port"):
        c.open()


def test_socket_url_works(emu):
    """pyserial URLs reach the same driver: a TCP bridge in front of the pty."""
    import os
    import select
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def bridge() -> None:
        conn, _ = srv.accept()
        fd = os.open(emu.port, os.O_RDWR | os.O_NOCTTY)
        try:
            while not stop.is_set():
                r, _, _ = select.select([conn, fd], [], [], 0.05)
                if conn in r:
                    data = conn.recv(4096)
                    if not data:
                        break
                    os.write(fd, data)
                if fd in r:
                    conn.sendall(os.read(fd, 4096))
        finally:
            os.close(fd)
            conn.close()

    t = threading.Thread(target=bridge, daemon=True)
    t.start()
    c = GardasoftController(GardasoftConfig(port=f"socket://127.0.0.1:{port}", timeout_s=0.5))
    try:
        c.open()
        assert c.version == emu.version
        c.apply(cond("a", (4, 25)))
        assert emu.lit() == {4: 25}
    finally:
        c.close()
        stop.set()
        t.join(2)
        srv.close()


def test_concurrent_callers_do_not_interleave(emu, ctl):
    errors: list[Exception] = []

    def worker(ch: int) -> None:
        try:
            for i in range(20):
                ctl.set_continuous(ch, i + 1)
                assert ctl.read_version() == emu.version
        except Exception as e:  # the test thread must record any failure
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(ch,)) for ch in (1, 2, 3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert not errors
    assert emu.lit() == {1: 20, 2: 20, 3: 20}


def test_next_command_after_backoff_reconnects_by_itself(emu, ctl):
    emu.close_port()
    with pytest.raises(DeviceError, match="lost during 'VR'"):
        ctl.command("VR")
    emu.reopen_port()
    time.sleep(0.06)  # past the first backoff (0.05 s)
    assert ctl.command("VR") == emu.version  # no explicit reconnect()
    assert ctl.connected


def test_daemon_path_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; import afrd.sim.cell, afrd.acquire.gardasoft, afrd.sim.emulator,"
        " afrd.acquire.sequencer, afrd.calibration.flatfield, afrd.calibration.exposure;"
        " sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize("pipeline", [True, False])
def test_pipelined_and_sequential_apply_agree(emu, pipeline):
    c = GardasoftController(GardasoftConfig(port=emu.port, timeout_s=0.3, pipeline=pipeline))
    c.open()
    try:
        n0 = c.round_trips
        c.apply(cond("a", (1, 50), (7, 30, 250.0)))
        assert emu.lit() == {1: 50, 7: 30}
        assert c.round_trips - n0 == (1 if pipeline else 8)
        assert c.commands_sent >= 9
    finally:
        c.close()


def test_error_inside_a_batch_names_that_command(emu, ctl):
    ctl.apply(cond("a", (1, 50)))
    # the next apply sends RS1,0 then RS2,40 in one write; the first fails, its batch stops
    emu.inject("err", count=1, code=3)
    with pytest.raises(DeviceError, match=r"'RS1,0' failed: Err 3"):
        ctl.apply(cond("b", (2, 40)))
    ctl.apply(cond("b", (2, 40)))  # cache dropped: retried in full
    assert emu.lit() == {2: 40}
    emu.inject("no_reply", count=1)
    with pytest.raises(DeviceError, match="no reply to"):
        ctl.apply(cond("c", (3, 40)))
    ctl.apply(cond("c", (3, 40)))
    assert emu.lit() == {3: 40}
