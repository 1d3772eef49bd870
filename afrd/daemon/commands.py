"""The daemon's control commands (status, trigger, set_threshold, pause, resume, reload), as a
mixin of `afrd.daemon.service.Service` so service.py keeps to the lifecycle and the result path."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from afrd.acquire.devices import camera_identity
from afrd.config.cell import CellConfig, load_config
from afrd.config.recipes import check_opened_camera
from afrd.daemon.interfaces import Interfaces
from afrd.daemon.interfaces.control import CommandError, ControlServer, check_name, clip
from afrd.daemon.interfaces.metrics import Metrics, MetricsServer
from afrd.daemon.interfaces.publisher import Publisher
from afrd.daemon.pipeline import Pipeline
from afrd.daemon.recipes import load_book
from afrd.daemon.systemd import Notifier
from afrd.daemon.verdict import UnknownProduct
from afrd.errors import AfrdError, ConfigError
from afrd.runtime.bundle import check_threshold

log = logging.getLogger("afrd.daemon")

# what a reload refuses to change (the sockets, devices and servers opened once at start)
RESTART_SECTIONS = (
    "cell",
    "camera",
    "controller",
    "sockets",
    "trigger",
    "queues",
    "opcua",
    "modbus",
    "mqtt",
    "recorder",
    "metrics",
    "access",
    "models",  # its dir holds the rollback history: a new one would hide the old silently
)


class ControlCommands:
    """What the control socket (and SIGHUP, for reload) can ask of a running Service."""

    config_path: Path
    cfg: CellConfig
    notifier: Notifier
    state: str
    started: float
    heatmaps: bool
    metrics: Metrics
    publisher: Publisher | None
    control: ControlServer | None
    metrics_server: MetricsServer | None
    recorder: Any
    pipeline: Pipeline | None
    interfaces: Interfaces
    devices: Any  # afrd.acquire.devices.Devices once started
    stop_event: threading.Event
    _reload_lock: threading.Lock
    _reloads: ThreadPoolExecutor  # one worker: reloads run one after another, off the main thread

    def status(self) -> dict:
        p = self.pipeline
        rt = p.runtime if p else None
        book = p.book if p else None
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
            # frames dropped before a part's first light (a late frame of an earlier part)
            "flushed_frames": getattr(getattr(self.devices, "camera", None), "flushed", 0),
            "threshold": book.default_recipe.threshold if book else None,
            "model": rt.model if rt else None,
            "engine": rt.engine.name if rt else None,
            "trigger": self.cfg.trigger.mode,
            # [[product]] recipes by name (absent: one recipe, any product is a label)
            "recipes": {n: r.describe() for n, r in book.recipes.items() if n is not None}
            if book
            else {},
            "default_product": book.default if book else None,
            "heatmaps": self.heatmaps,
            "recorder": rec,
            # a model's life: the drift watch per product, the shadow run (afrd.daemon.drift,
            # .shadow); warnings on their own line of the journal too
            "drift": self.drift.section() if self.drift.cfg.enabled else {},
            "shadow": self.shadow.summary() if self.shadow is not None else None,
            **self.interfaces.details(),  # "mqtt": connected, queued, dropped, error
            "endpoints": {
                "pub": self.publisher.bound if self.publisher else None,
                "control": self.control.bound if self.control else None,
                "metrics_port": self.metrics_server.port if self.metrics_server else None,
                **self.interfaces.endpoints(),  # "opcua": opc.tcp://..., "modbus": host:port
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
        if not isinstance(req.get("persist", False), bool):
            raise CommandError(
                f"set_threshold: persist must be true or false, got {clip(repr(req['persist']), 80)}"
            )
        product = req.get("product")
        if product is not None:
            check_name(product, "product")
        try:  # the product's recipe (the default one without "product")
            recipe = self.pipeline.set_threshold(v, product)
        except UnknownProduct as exc:
            raise CommandError(f"set_threshold: {clip(str(exc))}") from None
        if req.get("persist"):
            saved = self._persist_threshold(v, recipe.name)  # None: the top-level threshold
            return {"threshold": float(v), "product": recipe.name, **saved}
        log.info(
            "threshold of recipe %s set to %g over the control socket (not saved to the config)",
            recipe.name or "(the cell's)",
            v,
        )
        return {"threshold": float(v), "product": recipe.name, "persisted": False}

    def _persist_threshold(self, v: float, product: object) -> dict:
        """``"persist": true``: write the threshold into the config file, comments kept. The
        running threshold is set either way, so a file that cannot be written is reported in
        the reply (``persist_error``), not as a refused command."""
        from afrd.config.persist import persist_threshold

        name = product if isinstance(product, str) and product else None
        try:
            path = persist_threshold(self.config_path, v, name)
        except AfrdError as exc:
            log.warning("threshold set to %g but not saved: %s", v, exc)
            return {"persisted": False, "persist_error": clip(str(exc), 1000)}
        log.info("threshold set to %g over the control socket and saved to %s", v, path)
        return {"persisted": True, "config": str(path)}

    def _cmd_pause(self, _req: dict) -> dict:
        self.pipeline.pause()
        self.notifier.status("paused")
        return {"paused": True}

    def _cmd_resume(self, _req: dict) -> dict:
        self.pipeline.resume()
        self.notifier.status("inspecting")
        return {"paused": False}

    def request_reload(self) -> Future:
        """Run :meth:`reload` on the reload thread: the main thread keeps pinging the watchdog,
        the control socket keeps answering (its reply to ``reload`` waits for the future) and
        parts are judged with the running recipes until the swap."""
        return self._reloads.submit(self.reload)

    def reload(self) -> dict:
        """Re-read the config; apply heatmaps, the lights preview and the recipes (bundles,
        engine, thresholds, lighting, calibration files) as one swap. Devices, sockets, the PLC
        servers, the recorder and metrics need a restart: a reload that changes them is refused.
        On any error the running config stays."""
        with self._reload_lock:
            self.notifier.reloading()
            self.state = "reloading"
            try:
                new = load_config(self.config_path)
                changes = [s for s in RESTART_SECTIONS if getattr(new, s) != getattr(self.cfg, s)]
                if changes:
                    raise ConfigError(
                        f"{self.config_path}: reload cannot change {changes}; restart the service"
                    )
                book = load_book(new)  # every recipe opened before any is swapped in
                if self.stop_event.is_set():  # stopping meanwhile: the old book finishes the job
                    book.close()
                    raise AfrdError("reload abandoned: the daemon is stopping")
                try:  # calibration files of this camera (the config may not name its serial)
                    cam = self.devices.camera if self.devices is not None else None
                    check_opened_camera(book.specs, camera_identity(new.camera, cam))
                except ConfigError:
                    book.close()
                    raise
                self.pipeline.swap_book(book)  # the next part uses the new recipes, all of them
                self.heatmaps = new.heatmaps
                self.drift.configure(new.drift)
                self.cfg = new
                d = book.default_recipe
                log.info(
                    "reloaded: model %s threshold %g recipes %s",
                    d.runtime.model_name,
                    d.threshold,
                    book.products or "(one)",
                )
                return {
                    "model": d.runtime.model_name,
                    "threshold": d.threshold,
                    "recipes": {n: r.threshold for n, r in book.recipes.items() if n is not None},
                }
            finally:
                if self.state == "reloading":
                    self.state = "running"
                    self.notifier.ready("inspecting (reloaded)")
