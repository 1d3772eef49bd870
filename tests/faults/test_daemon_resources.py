"""Issue 12, cases 4, 7 and 10: resources the daemon does not own. An uncreatable recorder
directory stops recording, not inspection; an ipc:// path another live daemon listens on is
refused, not taken over; a flood of idle metrics connections neither exhausts descriptors nor
starves control and subscribers."""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.request

from conftest import afrd, inspect

from afrd.sim.launch import Daemon, wait_subscribed, write_config


def test_uncreatable_recorder_dir_stops_recording_not_the_daemon(bundle, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    cfg = write_config(
        tmp_path, bundle, extra=f'[recorder]\nenabled = true\ndir = "{tmp_path}/a-file/captures"'
    )
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    try:
        wait_subscribed(sub)
        rec = dm.ctl({"cmd": "status"})["result"]["recorder"]
        assert "cannot use" in rec["stopped"] and "a-file" in rec["stopped"], rec
        inspect(dm, sub, ["no-recorder-1", "no-recorder-2"])
    finally:
        sub.close()
        assert dm.stop() == 0, dm.output()


def test_a_live_ipc_endpoint_is_not_taken_over(bundle, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Daemon(write_config(tmp_path / "a", bundle)).start()
    sub = first.subscriber()
    try:
        wait_subscribed(sub)
        # a second daemon on the same sockets: refused with exit 2, the first keeps them
        second = write_config(tmp_path / "b", bundle, sockets_dir=tmp_path / "a")
        for args in (("config", "check", str(second)), ("run", "--config", str(second))):
            p = afrd(*args)
            assert p.returncode == 2, (args, p.stderr)
            assert "sockets.pub" in p.stderr and "in use by another live process" in p.stderr
        inspect(first, sub, ["still-mine"])
    finally:
        sub.close()
        assert first.stop() == 0, first.output()


def test_idle_metrics_connections_neither_exhaust_fds_nor_starve_control(bundle, tmp_path):
    cfg = write_config(tmp_path, bundle)
    cfg.write_text(
        cfg.read_text().replace(
            "[metrics]\nport = 0", "[metrics]\nport = 0\nmax_connections = 4\ntimeout_s = 1.0"
        )
    )
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    idle: list[socket.socket] = []
    try:
        wait_subscribed(sub)
        port = dm.ctl({"cmd": "status"})["result"]["endpoints"]["metrics_port"]
        fds_before = len(os.listdir(f"/proc/{dm.proc.pid}/fd"))
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        inspect(dm, sub, [f"flood-{i}" for i in range(3)])
        fds_during = len(os.listdir(f"/proc/{dm.proc.pid}/fd"))
        assert fds_during < fds_before + 4 + 16, (fds_before, fds_during)
        # the 4 idle connections holding the slots time out (timeout_s): scraping works again
        # while all 300 are still open on this side
        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                text = urllib.request.urlopen(url, timeout=5).read()
                break
            except (OSError, http.client.HTTPException):
                assert time.monotonic() < deadline, dm.output()
                time.sleep(0.1)
        refused = [ln for ln in text.decode().splitlines() if ln.startswith("afrd_metrics_refused")]
        assert refused and float(refused[0].split()[-1]) > 0, refused
        assert b"afrd_publisher_dropped" not in text  # a PUB socket cannot count its drops
    finally:
        for s in idle:
            s.close()
        sub.close()
        assert dm.stop() == 0, dm.output()
