"""Issue 12, case 3: triggers arriving while SIGTERM is handled. The daemon closes its control
socket first, then publishes every part it accepted (the one in flight inspected, queued ones
as error/shutdown), then closes the PUB socket: a trigger answered ``ok`` is always published."""

from __future__ import annotations

import signal
import threading

from conftest import results_for

from afrd.daemon.ctl import request
from afrd.sim.launch import Daemon, wait_subscribed, write_config


def test_every_trigger_answered_ok_during_sigterm_is_published(bundle, tmp_path):
    cfg = write_config(tmp_path, bundle, controller='kind = "sim"\nsettle_s = 0.01')
    dm = Daemon(cfg).start()
    sub = dm.subscriber()
    try:
        wait_subscribed(sub)
        accepted: list[str] = []
        three = threading.Event()

        def hammer() -> None:
            i = 0
            while True:
                pid = f"term-{i}"
                i += 1
                r = request(dm.control, {"cmd": "trigger", "part_id": pid}, timeout_s=2.0)
                if r is None:  # the control socket is closed: the daemon is stopping
                    return
                if r["ok"]:
                    accepted.append(pid)
                elif "stopping" in r["error"]:
                    continue  # refused, not accepted: nothing to publish
                if len(accepted) >= 3:
                    three.set()

        t = threading.Thread(target=hammer)
        t.start()
        assert three.wait(30), dm.output()
        dm.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert dm.stop() == 0, dm.output()
        results = results_for(sub, accepted, timeout=30)
        assert len(accepted) >= 3
        codes = {r["error"]["code"] for r in results if r["verdict"] == "error"}
        assert codes <= {"shutdown"}, results
    finally:
        sub.close()
        dm.stop()
