"""Issue 21, items 5 and 9: what an edit of the cell config fixes stops `afrd run` with exit 2
and one line naming the key, file or port, never a traceback (a port in use, an ipc:// folder
that is not there, a flat-field file that is not a zip; the same file on reload is an error
reply naming it); `engine.kind = "null"` (every part passes) is refused for a real camera
unless the config says ``allow_null_engine = true``, and logged as an error when it runs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import afrd, inspect, refused

from afrd.sim.launch import Daemon, wait_subscribed, write_config


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def _edited(tmp_path: Path, bundle: Path, old: str, new: str, extra: str = "") -> Path:
    cfg = write_config(tmp_path, bundle, extra=extra)
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new, 1))
    return cfg


def _one_line_exit_2(cfg: Path, *expect: str) -> None:
    p = afrd("run", "--config", str(cfg))
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert any(all(e in ln for e in expect) for ln in p.stderr.splitlines()), p.stderr[-3000:]


@pytest.mark.timeout(120)
def test_a_metrics_port_in_use_names_the_key(bundle, tmp_path, busy_port):
    cfg = _edited(tmp_path, bundle, "[metrics]\nport = 0", f"[metrics]\nport = {busy_port}")
    _one_line_exit_2(cfg, "metrics.port", f":{busy_port}", "in use")


@pytest.mark.timeout(120)
def test_a_control_port_in_use_names_the_key(bundle, tmp_path, busy_port):
    ep = f"ipc://{tmp_path}/ctl.sock"
    cfg = _edited(tmp_path, bundle, ep, f"tcp://127.0.0.1:{busy_port}")
    _one_line_exit_2(cfg, "sockets.control", f":{busy_port}", "in use")


@pytest.mark.timeout(120)
def test_a_missing_ipc_directory_names_the_key_and_folder(bundle, tmp_path):
    ep = f"ipc://{tmp_path}/pub.sock"
    cfg = _edited(tmp_path, bundle, ep, f"ipc://{tmp_path}/nowhere/pub.sock")
    _one_line_exit_2(cfg, "sockets.pub", f"{tmp_path}/nowhere")


@pytest.mark.timeout(120)
def test_an_opcua_port_in_use_names_the_key_without_a_traceback(bundle, tmp_path, busy_port):
    opc = f'[opcua]\nenabled = true\nhost = "127.0.0.1"\nport = {busy_port}'
    cfg = _edited(tmp_path, bundle, "[metrics]", f"{opc}\n\n[metrics]")
    _one_line_exit_2(cfg, "opcua", f":{busy_port}", "in use")


@pytest.mark.timeout(120)
def test_a_broken_flatfield_is_refused_at_start_and_on_reload(bundle, tmp_path):
    bad = tmp_path / "flatfield.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip at all" * 8)
    cfg = write_config(tmp_path, bundle, extra=f'flatfield = "{bad}"')
    refused(cfg, "flat-field file", str(bad))
    good_text = write_config(tmp_path, bundle).read_text()
    dm = Daemon(cfg).start()
    sub = dm.subscriber([b"result.", b"status."])
    try:
        wait_subscribed(sub)
        cfg.write_text(
            good_text.replace("heatmaps = true", f'heatmaps = true\nflatfield = "{bad}"')
        )
        r = dm.ctl({"cmd": "reload"})
        assert not r["ok"] and str(bad) in r["error"] and "internal" not in r["error"], r
        inspect(dm, sub, ["after-broken-flatfield"])  # the running recipes stay
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()
    assert "Traceback" not in dm.output()


@pytest.mark.timeout(120)
def test_the_null_engine_needs_a_simulated_camera_or_an_explicit_allowance(bundle, tmp_path):
    camera = '[camera]\nkind = "genicam"\nserial = "X1"\n'
    cfg = write_config(tmp_path, bundle, engine="null")
    real = tmp_path / "real.toml"
    text = cfg.read_text()
    sim_camera = text[text.index("[camera]") : text.index("[controller]")]
    real.write_text(text.replace(sim_camera, camera + "\n"))
    refused(real, "engine.kind", "null", "allow_null_engine")
    allowed = tmp_path / "allowed.toml"
    allowed.write_text("allow_null_engine = true\n" + real.read_text())
    p = afrd("config", "check", str(allowed))
    assert "allow_null_engine" not in p.stderr and "engine.kind" not in p.stderr, p.stderr
    # a simulated camera may use it, and the daemon says loudly what it is doing
    dm = Daemon(cfg).start()
    try:
        assert dm.ctl({"cmd": "status"})["result"]["engine"].startswith("null")
    finally:
        assert dm.stop() == 0
    assert "ERROR afrd.daemon: engine.kind = 'null'" in dm.output()
