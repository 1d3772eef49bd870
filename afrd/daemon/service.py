"""The inspection daemon behind `afrd run` (afrd.daemon.main); control commands: commands.py.

`afrd run` start-up: validate the config (exit 2 naming the key), check the sockets (exit 2 when the control
socket would be reachable from the network without CURVE keys, or an ipc:// path is another live
process's), verify the bundle and check the config's lighting covers its lights (exit 2), load and
warm the engine (EXTEND_TIMEOUT_USEC to systemd meanwhile), bind the PUB and control sockets, open
the controller and camera, then READY=1. `afrd config check` runs the same checks up to here.
Running: the main thread pings the systemd watchdog while the pipeline, control and heartbeat
threads are alive and hands SIGHUP to the reload thread (a reload opens engines for seconds to
minutes: the main thread never waits for it; a config that does not load is logged, the running
one stays); SIGTERM/SIGINT stop accepting triggers (control socket closed first), finish and
publish every part already accepted, then close the rest and exit 0.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from afrd.acquire.devices import Devices, camera_identity
from afrd.config.cell import CellConfig
from afrd.config.check import check_sockets
from afrd.config.recipes import check_opened_camera
from afrd.daemon.commands import ControlCommands
from afrd.daemon.drift import DriftBook
from afrd.daemon.guard import Guard, audit_label
from afrd.daemon.interfaces import Interfaces, build_interfaces
from afrd.daemon.interfaces.control import ControlServer
from afrd.daemon.interfaces.metrics import Metrics, MetricsServer
from afrd.daemon.interfaces.mqtt_store import first_seq
from afrd.daemon.interfaces.publisher import Publisher
from afrd.daemon.model_commands import ModelCommands
from afrd.daemon.pipeline import Pipeline
from afrd.daemon.recipes import load_book
from afrd.daemon.roles import SIGHUP
from afrd.daemon.systemd import Notifier, watchdog_interval
from afrd.daemon.verdict import Job, heatmap_message
from afrd.errors import AfrdError

log = logging.getLogger("afrd.daemon")


class Service(ControlCommands, ModelCommands):
    """The daemon: devices, runtime, pipeline, publisher, control, metrics and recorder, composed
    from one cell config."""

    def __init__(self, config_path: str | Path, cfg: CellConfig) -> None:
        self.config_path = Path(config_path)
        self.cfg = cfg
        self.notifier = Notifier()
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.started = time.monotonic()
        self.state = "starting"
        self.metrics = Metrics(cfg.cell)
        self.publisher: Publisher | None = None
        self.control: ControlServer | None = None
        self.metrics_server: MetricsServer | None = None
        self.recorder: Any = None  # afrd.daemon.recorder.Recorder when enabled
        self.lights: Any = None  # afrd.daemon.lights.LightsWorker once [lights_preview] is on
        self.pipeline: Pipeline | None = None
        self.devices: Devices | None = None
        self.interfaces = Interfaces()  # OPC UA, Modbus TCP: build_interfaces in start()
        self._free_run_thread: threading.Thread | None = None
        self._unhealthy_logged = False
        self.heatmaps = cfg.heatmaps
        self.shadow = None  # afrd.daemon.shadow.ShadowRun while a candidate is shadowed
        self.last_shadow = None  # the report of the last run stopped or promoted
        self.drift = DriftBook(cfg.cell, cfg.drift)  # scores vs calibration, per product and model
        self._reload_lock = threading.Lock()
        self._reloads = ThreadPoolExecutor(1, thread_name_prefix="afrd-reload")
        self.commands = {
            "status": lambda _req: self.status(),
            "trigger": self._cmd_trigger,
            "set_threshold": self._cmd_set_threshold,
            "pause": self._cmd_pause,
            "resume": self._cmd_resume,
            "reload": lambda _req: self.request_reload(),
            "audit_label": audit_label,  # the page's labels, recorded by the guard
            "shadow_start": self._cmd_shadow_start,  # a model's life: afrd.daemon.model_commands
            "shadow_stop": self._cmd_shadow_stop,
            "shadow_status": self._cmd_shadow_status,
            "promote": self._cmd_promote,
            "rollback": self._cmd_rollback,
        }
        self.guard: Guard | None = None  # roles and the audit log: start()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        cfg = self.cfg
        check_sockets(cfg)
        self.guard = Guard.open(self, cfg.access)  # every command runs through it
        self.notifier.status("verifying bundles and calibration files")
        book = load_book(cfg, self.notifier)
        runtime = book.default_recipe.runtime
        if cfg.engine.kind == "null":  # allowed (sim camera or allow_null_engine), still loud
            log.error("engine.kind = 'null': every part passes, no image is judged")
        self.notifier.status("binding sockets")
        sk = cfg.sockets
        self.publisher = Publisher(sk.pub, cfg.cell, sndhwm=sk.sndhwm)
        self.control = ControlServer(
            sk.control,
            self.commands,
            sk.curve_keys_dir,
            allow_any_client=sk.allow_any_client,
            max_request_bytes=sk.max_request_bytes,
            guard=self.guard,
            key_role=cfg.access.key_role,
            local_role=cfg.access.local_role,
        )
        if cfg.metrics.enabled:
            mc = cfg.metrics
            self.metrics_server = MetricsServer(
                self.metrics, mc.host, mc.port, mc.max_connections, mc.timeout_s
            )
            self.metrics_server.start()
        if cfg.recorder.enabled:
            from afrd.daemon.recorder import Recorder

            self.recorder = Recorder(cfg.recorder)
            self.recorder.start()  # a directory it cannot use stops recording, not the daemon
        self.notifier.status("opening camera and lighting controller")
        mode = cfg.trigger.mode
        self.devices = Devices(cfg.camera, cfg.controller, mode).open()
        check_opened_camera(book.specs, camera_identity(cfg.camera, self.devices.camera))
        q = cfg.queues
        self.pipeline = Pipeline(
            cfg.cell,
            self.devices.sequencer(book.default_recipe.setup.conditions).acquire,
            book,
            self._sink,
            triggers=q.triggers,
            acquired=q.acquired,
            results=q.results,
            hardware_product=cfg.trigger.product if mode == "hardware" else None,
            first_seq=first_seq(cfg.mqtt),  # (cell, seq) stays unique while results queue
        )
        self.metrics.queue_fn = self.pipeline.queue_depths
        self.metrics.thresholds_fn = lambda: {
            n or cfg.trigger.product: r.threshold for n, r in self.pipeline.book.recipes.items()
        }
        self.metrics.add_drift(self.drift)  # afrd_score, afrd_drift{product}
        self.metrics.gauges_fn = lambda: {
            "paused": float(self.pipeline.paused),
            "in_flight": float(self.pipeline.in_flight),
        }
        self.pipeline.start()
        self.control.start()
        self.publisher.start_heartbeat(self.status, cfg.sockets.heartbeat_s)
        self.interfaces = build_interfaces(cfg, self)  # ConfigError naming host:port -> exit 2
        if mode == "free-run":
            self._free_run_thread = threading.Thread(
                target=self._free_run, name="afrd-trigger-free-run", daemon=True
            )
            self._free_run_thread.start()
        self.state = "running"
        log.info(
            "cell %s running: model %s (%s), threshold %.6g, recipes %s, trigger %s, PUB %s, "
            "control %s%s",
            cfg.cell,
            runtime.model_name,
            runtime.engine.name,
            book.default_recipe.threshold,
            book.products or "(one, any product)",
            mode,
            self.publisher.bound,
            self.control.bound,
            f", metrics :{self.metrics_server.port}" if self.metrics_server else "",
        )
        self.notifier.ready(f"inspecting: model {runtime.model_name}, trigger {mode}")

    def _free_run(self) -> None:
        period = self.cfg.trigger.interval_s
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            if not self.pipeline.paused:
                self.pipeline.trigger(None, self.cfg.trigger.product)
            nxt += period
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))

    def run_forever(self) -> int:
        wd = watchdog_interval()
        tick = min(wd, 1.0) if wd else 1.0
        while not self.stop_event.wait(tick):
            if self.reload_event.is_set():
                self.reload_event.clear()
                reload = self.guard.run("reload", self.commands["reload"], {}, SIGHUP)
                reload.add_done_callback(_log_reload)
            if not self.unhealthy_parts():  # a daemon that cannot take triggers is not healthy
                if wd:
                    self.notifier.watchdog()
            elif not self._unhealthy_logged:
                self._unhealthy_logged = True
                log.error("unhealthy (%s): no more watchdog pings", self.unhealthy_parts())
        return self.shutdown()

    def unhealthy_parts(self) -> list[str]:
        """The threads that died or stopped looping (empty when healthy)."""
        bad = []
        if self.pipeline is None or not self.pipeline.healthy():
            bad.append("pipeline")
        if self.control is None or not self.control.healthy():
            bad.append("control")
        if self.publisher is None or not self.publisher.heartbeat_alive():
            bad.append("heartbeat")
        bad += self.interfaces.unhealthy()
        return bad

    def shutdown(self) -> int:
        self.state = "stopping"
        self.notifier.stopping("finishing the part in flight")
        log.info("stopping: finishing the part in flight")
        # 1. stop accepting triggers: the control socket answers its last request and closes
        self.stop_event.set()
        self._reloads.shutdown(wait=False, cancel_futures=True)  # one loading gives up at its end
        if self.control is not None:
            self.control.close()
        self.interfaces.refuse_triggers()  # OPC UA / Modbus triggers: taken before this or refused
        if self._free_run_thread is not None:
            self._free_run_thread.join(timeout=5)
        # 2. publish every accepted part (the one in flight; queued ones as error/shutdown)
        if self.pipeline is not None:
            self.pipeline.stop()  # also closes the engine
        if self.shadow is not None:
            self.shadow.stop()
        # 3. close the rest (the PLC servers after the pipeline handed them its last result)
        self.interfaces.close()
        for part in (self.lights, self.recorder, self.devices, self.metrics_server):
            if part is not None:
                part.close()
        if self.publisher is not None:
            time.sleep(0.05)  # let ZeroMQ's I/O thread flush the last result
            self.publisher.close()
        log.info("stopped")
        return 0

    # ------------------------------------------------------------------ output
    def _sink(self, job: Job, msg: dict) -> None:
        t0 = time.perf_counter()
        self.publisher.result(msg)  # may raise (unencodable): the pipeline republishes as error
        self.interfaces.result(msg)  # enqueued onto each server's loop; never raises
        try:
            self._after_publish(job, msg, t0)
        except Exception:  # metrics, heatmap or recorder trouble never touches the result
            log.exception("part %s: post-publish step failed", job.seq)

    def _after_publish(self, job: Job, msg: dict, t0: float) -> None:
        m = self.metrics
        recipe = job.recipe.name if job.recipe is not None else None
        m.part(job.verdict, msg.get("error", {}).get("code"), recipe)
        total = job.t_published - job.t_trigger
        m.observe("acquire", job.t_acquire)
        m.observe("infer", job.t_infer)
        m.observe("total", total)
        if job.t_acquire is not None and job.t_infer is not None:
            m.observe("overhead", total - job.t_acquire - job.t_infer)
        to_itf = self.interfaces.wants_heatmap(job.verdict)  # [mqtt] heatmaps
        if (self.heatmaps or to_itf) and job.amap is not None:
            hm = heatmap_message(self.cfg.cell, job)
            if hm is not None:
                if self.heatmaps:
                    self.publisher.heatmap(*hm)
                if to_itf:
                    self.interfaces.heatmap(*hm)
        lp = self.cfg.lights_preview  # after the result and heatmap; a reload may switch it
        if lp.enabled and job.imageset is not None and job.verdict != "error":
            if self.lights is None:  # encoded on its own thread: never delays a result
                from afrd.daemon.lights import LightsWorker

                self.lights = LightsWorker(self.cfg.cell, self.publisher.lights, m.observe)
            self.lights.submit(job, lp.max_px, lp.quality)
        self._watch(job, msg)  # drift, the shadow run; the recorder (after the shadow, if one)
        m.observe("publish", time.perf_counter() - t0)


def _log_reload(fut: Future) -> None:
    """The outcome of a SIGHUP reload, for the journal (the control socket's goes to its client)."""
    if fut.cancelled():
        return
    exc = fut.exception()
    if isinstance(exc, AfrdError):
        log.error("reload failed, keeping the running config: %s", exc)
    elif exc is not None:  # a bug in reload must not end inspection
        log.error("reload failed, keeping the running config", exc_info=exc)
