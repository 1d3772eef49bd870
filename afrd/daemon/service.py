"""`afrd run --config cell.toml`: the inspection daemon.

Start-up: validate the config (exit 2 naming the key), check the sockets (exit 2 when the control
socket would be reachable from the network without CURVE keys, or an ipc:// path is another live
process's), verify the bundle and check the config's lighting covers its lights (exit 2), load and
warm the engine (EXTEND_TIMEOUT_USEC to systemd meanwhile), bind the PUB and control sockets, open
the controller and camera, then READY=1. `afrd config check` runs the same checks up to here.
Running: the main thread pings the systemd watchdog while the pipeline, control and heartbeat
threads are alive, applies SIGHUP reloads (a config that does not load is logged, the running one
stays); SIGTERM/SIGINT stop accepting triggers (control socket closed first), finish and publish
every part already accepted, then close the rest and exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from afrd import cliargs
from afrd.acquire.devices import Devices
from afrd.acquire.lighting import LightingCondition
from afrd.config.cell import CellConfig, load_config
from afrd.config.check import check_sockets
from afrd.daemon.control import CommandError, ControlServer, check_name, clip
from afrd.daemon.metrics import Metrics, MetricsServer
from afrd.daemon.pipeline import Pipeline
from afrd.daemon.publisher import Publisher
from afrd.daemon.systemd import Notifier, watchdog_interval
from afrd.daemon.verdict import Job, heatmap_message
from afrd.errors import AfrdError, ConfigError, DeviceError
from afrd.runtime.bundle import check_threshold
from afrd.runtime.loader import Runtime, load_runtime

log = logging.getLogger("afrd.daemon")


def _load_runtime(
    cfg: CellConfig, notifier: Notifier | None = None
) -> tuple[Runtime, list[LightingCondition]]:
    """The runtime of the config's bundle and the lighting conditions in its lights' order
    (ConfigError, before the engine is opened, when the config does not light them all)."""
    conditions: list[LightingCondition] = []

    def check(lights: tuple[str, ...]) -> None:
        conditions[:] = cfg.conditions_for(lights, f"bundle {cfg.bundle.path}")

    def status(text: str) -> None:
        if notifier is not None:
            notifier.extend_timeout(300)
            notifier.status(text)

    e = cfg.engine
    rt = load_runtime(cfg.bundle.path, e.kind, e.open_options(), cfg.threshold, status, check)
    return rt, conditions


class Service:
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
        self.pipeline: Pipeline | None = None
        self.devices: Devices | None = None
        self._free_run_thread: threading.Thread | None = None
        self._unhealthy_logged = False
        self.heatmaps = cfg.heatmaps
        self._reload_lock = threading.Lock()
        self.commands = {
            "status": lambda _req: self.status(),
            "trigger": self._cmd_trigger,
            "set_threshold": self._cmd_set_threshold,
            "pause": self._cmd_pause,
            "resume": self._cmd_resume,
            "reload": lambda _req: self.reload(),
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        cfg = self.cfg
        check_sockets(cfg)
        self.notifier.status("verifying bundle")
        runtime, conditions = _load_runtime(cfg, self.notifier)
        self.notifier.status("binding sockets")
        sk = cfg.sockets
        self.publisher = Publisher(sk.pub, cfg.cell, sndhwm=sk.sndhwm)
        self.control = ControlServer(
            sk.control,
            self.commands,
            sk.curve_keys_dir,
            allow_any_client=sk.allow_any_client,
            max_request_bytes=sk.max_request_bytes,
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
        q = cfg.queues
        self.pipeline = Pipeline(
            cfg.cell,
            self.devices.sequencer(conditions).acquire,
            runtime,
            self._sink,
            triggers=q.triggers,
            acquired=q.acquired,
            results=q.results,
            hardware_product=cfg.trigger.product if mode == "hardware" else None,
        )
        self.metrics.queue_fn = self.pipeline.queue_depths
        self.metrics.gauges_fn = lambda: {
            "paused": float(self.pipeline.paused),
            "in_flight": float(self.pipeline.in_flight),
        }
        self.pipeline.start()
        self.control.start()
        self.publisher.start_heartbeat(self.status, cfg.sockets.heartbeat_s)
        if mode == "free-run":
            self._free_run_thread = threading.Thread(
                target=self._free_run, name="afrd-trigger-free-run", daemon=True
            )
            self._free_run_thread.start()
        self.state = "running"
        log.info(
            "cell %s running: model %s (%s), threshold %.6g, trigger %s, PUB %s, control %s%s",
            cfg.cell,
            runtime.model_name,
            runtime.engine.name,
            runtime.threshold,
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
                try:
                    self.reload()
                except AfrdError as exc:
                    log.error("reload failed, keeping the running config: %s", exc)
                except Exception:  # a bug in reload must not end inspection
                    log.exception("reload failed, keeping the running config")
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
        return bad

    def shutdown(self) -> int:
        self.state = "stopping"
        self.notifier.stopping("finishing the part in flight")
        log.info("stopping: finishing the part in flight")
        # 1. stop accepting triggers: the control socket answers its last request and closes
        self.stop_event.set()
        if self.control is not None:
            self.control.close()
        if self._free_run_thread is not None:
            self._free_run_thread.join(timeout=5)
        # 2. publish every accepted part (the one in flight; queued ones as error/shutdown)
        if self.pipeline is not None:
            self.pipeline.stop()  # also closes the engine
        # 3. close the rest
        for part in (self.recorder, self.devices, self.metrics_server):
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
        try:
            self._after_publish(job, msg, t0)
        except Exception:  # metrics, heatmap or recorder trouble never touches the result
            log.exception("part %s: post-publish step failed", job.seq)

    def _after_publish(self, job: Job, msg: dict, t0: float) -> None:
        m = self.metrics
        m.part(job.verdict, msg.get("error", {}).get("code"))
        total = job.t_published - job.t_trigger
        m.observe("acquire", job.t_acquire)
        m.observe("infer", job.t_infer)
        m.observe("total", total)
        if job.t_acquire is not None and job.t_infer is not None:
            m.observe("overhead", total - job.t_acquire - job.t_infer)
        if self.heatmaps and job.amap is not None:
            hm = heatmap_message(self.cfg.cell, job)
            if hm is not None:
                self.publisher.heatmap(*hm)
        if self.recorder is not None and job.imageset is not None and job.verdict != "error":
            self.recorder.submit(job.imageset, msg)
        m.observe("publish", time.perf_counter() - t0)

    # ------------------------------------------------------------------ control
    def status(self) -> dict:
        p = self.pipeline
        rt = p.runtime if p else None
        state = self.state
        if state == "running" and p is not None and p.paused:
            state = "paused"
        rec = None
        if self.recorder is not None:
            rec = {
                "recorded": self.recorder.recorded,
                "bytes": self.recorder.total_bytes,
                "stopped": self.recorder.stopped_reason,
            }
        return {
            "state": state,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "parts": dict(self.metrics.parts),
            "queues": p.queue_depths() if p else {},
            "in_flight": p.in_flight if p else 0,
            "idle_grabs": p.idle_grabs if p else 0,
            "threshold": rt.threshold if rt else None,
            "model": rt.model if rt else None,
            "engine": rt.engine.name if rt else None,
            "trigger": self.cfg.trigger.mode,
            "heatmaps": self.heatmaps,
            "recorder": rec,
            "endpoints": {
                "pub": self.publisher.bound if self.publisher else None,
                "control": self.control.bound if self.control else None,
                "metrics_port": self.metrics_server.port if self.metrics_server else None,
            },
        }

    def _cmd_trigger(self, req: dict) -> dict:
        part_id, product = req.get("part_id"), req.get("product", self.cfg.trigger.product)
        if part_id is not None:
            check_name(part_id, "part_id")
        check_name(product, "product")
        job = self.pipeline.trigger(part_id, product)
        if job.error is not None:
            raise CommandError(f"trigger: part {job.part_id} not inspected: {job.error[1]}")
        return {"seq": job.seq, "part_id": job.part_id}

    def _cmd_set_threshold(self, req: dict) -> dict:
        try:  # refused before anything changes
            v = check_threshold(req.get("threshold"), "set_threshold")
        except AfrdError as exc:
            raise CommandError(clip(str(exc))) from None
        self.pipeline.set_threshold(v)
        log.info("threshold set to %g over the control socket (not saved to the config)", v)
        return {"threshold": float(v), "persisted": False}

    def _cmd_pause(self, _req: dict) -> dict:
        self.pipeline.pause()
        self.notifier.status("paused")
        return {"paused": True}

    def _cmd_resume(self, _req: dict) -> dict:
        self.pipeline.resume()
        self.notifier.status("inspecting")
        return {"paused": False}

    def reload(self) -> dict:
        """Re-read the config; apply threshold, heatmaps and the model (bundle/engine). Devices
        and sockets need a restart. On any error the running config stays."""
        with self._reload_lock:
            self.notifier.reloading()
            self.state = "reloading"
            try:
                new = load_config(self.config_path)
                changes = []
                for section in ("cell", "camera", "controller", "sockets", "trigger", "queues"):
                    if getattr(new, section) != getattr(self.cfg, section):
                        changes.append(section)
                if changes:
                    raise ConfigError(
                        f"{self.config_path}: reload cannot change {changes}; restart the service"
                    )
                runtime, _ = _load_runtime(new)
                if runtime.lights != self.pipeline.runtime.lights:
                    runtime.close()
                    raise ConfigError(
                        f"{self.config_path}: the new bundle uses lights {list(runtime.lights)}, "
                        f"the running one {list(self.pipeline.runtime.lights)}; restart the service"
                    )
                old = self.pipeline.swap_runtime(runtime)
                old.close()
                self.heatmaps = new.heatmaps
                self.cfg = new
                log.info("reloaded: model %s threshold %g", runtime.model_name, runtime.threshold)
                return {"model": runtime.model_name, "threshold": runtime.threshold}
            finally:
                self.state = "running"
                self.notifier.ready("inspecting (reloaded)")


def main(argv: list[str]) -> int:
    ap = cliargs.parser(
        "afrd run", "run the inspection daemon (--log-level, a global flag, defaults to info)"
    )
    ap.add_argument("--config", "-c", required=True, help="cell config (TOML)")
    args = ap.parse_args(cliargs.take_global_flags(argv))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):  # journald stamps lines itself
        fmt = "%(asctime)s " + fmt
    cliargs.setup_logging("info", fmt)
    try:
        cfg = load_config(args.config)
    except AfrdError as exc:
        print(f"afrd run: error: {exc}", file=sys.stderr)
        return 2
    # Hand the GIL over within 1 ms (default 5 ms): the acquire thread's rendering/conversion
    # must not hold up the thread that publishes the previous part.
    sys.setswitchinterval(0.001)
    svc = Service(args.config, cfg)

    def on_term(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        svc.stop_event.set()

    def on_hup(_signum: int, _frame: object) -> None:
        svc.reload_event.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        svc.start()
    except DeviceError as exc:  # a device may come back: exit 1 so systemd restarts us
        print(f"afrd run: device error: {exc}", file=sys.stderr)
        svc.shutdown()
        return 1
    except AfrdError as exc:
        print(f"afrd run: error: {exc}", file=sys.stderr)
        svc.shutdown()
        return 2
    except Exception:
        log.exception("start-up failed")
        svc.shutdown()
        return 1
    return svc.run_forever()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
