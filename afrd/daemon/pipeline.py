"""The inspection pipeline: trigger -> acquire -> infer -> verdict -> publish/record.

Three threads joined by bounded queues, so acquisition of part k+1 overlaps inference of part k
and publishing never waits on either::

    trigger() --[triggers]--> acquire thread --[acquired]--> infer thread --[results]--> output

No part is dropped silently: a trigger that finds the trigger queue full (overrun), an
acquisition fault, an engine exception, a malformed engine output or a non-finite score each
become a result with verdict ``error`` and a reason, published like any other; anything else a
stage raises (a bug) becomes that part's ``error``/``internal`` result, and every thread goes on
with the next part. ``stop()`` refuses new triggers, publishes queued-but-not-started triggers
as ``error``/``shutdown``, and lets the part in flight finish and be published.

``trigger()`` never blocks its caller (the control socket's and the PLC servers' threads): a
part it refuses goes to the output thread outside the ``results`` bound, which only holds back
the infer thread (image sets are what the bound is for; a refused part carries none).

Hardware-trigger mode (``hardware_product``): whenever no trigger is queued, the acquire thread
arms one acquisition itself and the camera's grab waits for its line. A ``FrameTimeout`` on an
armed acquisition means no part came: it is counted (``idle_grabs``), not published, and its
sequence number is reused.

Recipes: the pipeline holds a :class:`afrd.daemon.recipes.RecipeBook`; a part pins the book
when its acquisition starts, takes its product's recipe (setup for the sequencer, engine and
threshold for the verdict) and unpins it after inference. ``swap_book`` (reload) installs a new
book between two parts; the old one's engines close when its last pinned part is through.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from afrd.daemon.recipes import Recipe, RecipeBook
from afrd.daemon.verdict import Job, describe, judge, result_message
from afrd.errors import FrameTimeout
from afrd.runtime.loader import Runtime

log = logging.getLogger("afrd.daemon.pipeline")

_STOP = object()


class Pipeline:
    """``acquire(part_id, product[, setup]) -> ImageSet`` (the setup of the part's recipe when
    it has one); ``sink(job, result_msg)`` publishes/records. ``recipes``: a RecipeBook, or one
    Runtime that serves every product."""

    def __init__(
        self,
        cell: str,
        acquire: Callable[[str, str], Any],
        recipes: RecipeBook | Runtime,
        sink: Callable[[Job, dict], None],
        triggers: int = 16,
        acquired: int = 2,
        results: int = 16,
        hardware_product: str | None = None,
        first_seq: int = 0,
    ) -> None:
        self.cell = cell
        self._acquire = acquire
        if isinstance(recipes, Runtime):
            recipes = RecipeBook.single(recipes)
        self._book = recipes
        self._rt_lock = threading.Lock()  # guards _book (a book guards its own pin count)
        self._sink = sink
        self._hardware_product = hardware_product
        self._q_trig: queue.Queue = queue.Queue(maxsize=triggers)
        self._q_acq: queue.Queue = queue.Queue(maxsize=acquired)
        self._q_out: queue.Queue = queue.Queue()  # bounded by _slots for inferred parts
        self._slots = threading.BoundedSemaphore(results)
        self.results_bound = results
        self._seq = first_seq  # the MQTT link's store keeps it across restarts
        self._seq_lock = threading.Lock()
        self._closing = False
        # trigger() checks _closing and queues under this lock, stop() sets it under it: a
        # trigger is either queued before stop() drains the queue or refused, never lost between
        self._gate = threading.Lock()
        self._paused = False
        self._in_flight = 0
        self.idle_grabs = 0  # hardware trigger: armed grabs that timed out (no part came)
        stages = (
            ("afrd-acquire", self._next_trigger, self._acquire_one, self._q_acq),
            ("afrd-infer", partial(self._q_acq.get, timeout=1.0), self._infer_one, self._q_out),
            ("afrd-output", partial(self._q_out.get, timeout=1.0), self._output_one, None),
        )
        self._threads = [
            threading.Thread(target=self._stage, args=stage, name=stage[0], daemon=True)
            for stage in stages
        ]
        self._last_beat = {t.name: time.monotonic() for t in self._threads}

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        for t in self._threads:
            t.start()

    @property
    def book(self) -> RecipeBook:
        return self._book

    @property
    def runtime(self) -> Runtime:
        """The default recipe's engine and threshold holder."""
        return self._book.default_recipe.runtime

    def swap_book(self, book: RecipeBook) -> None:
        """Install new recipes for the next part; the old book's engines close once no part
        in flight uses them (now, when none does)."""
        with self._rt_lock:
            old, self._book = self._book, book
        old.retire()

    def set_threshold(self, value: float, product: str | None = None) -> Recipe:
        """The threshold of ``product``'s recipe (None: the default one) for the next parts;
        UnknownProduct when the cell has no such recipe."""
        with self._rt_lock:
            recipe = self._book.get(product)
            recipe.threshold = float(value)
        return recipe

    def _pin(self, job: Job) -> None:
        with self._rt_lock:
            job.book = self._book.pin()

    def _unpin(self, job: Job) -> None:
        book, job.book = job.book, None
        if book is not None:
            book.unpin()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Refuse triggers (each becomes an ``error``/``paused`` result) until ``resume()``."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def in_flight(self) -> int:
        """Parts being acquired, inferred or published right now."""
        return self._in_flight

    def queue_depths(self) -> dict[str, int]:
        return {
            "triggers": self._q_trig.qsize(),
            "acquired": self._q_acq.qsize(),
            "results": self._q_out.qsize(),
        }

    def healthy(self, max_age_s: float = 30.0) -> bool:
        """All three threads alive and each looped within ``max_age_s`` (watchdog)."""
        now = time.monotonic()
        return all(t.is_alive() for t in self._threads) and all(
            now - b < max_age_s for b in self._last_beat.values()
        )

    def _new_job(self, part_id: str | None, product: str) -> Job:
        with self._seq_lock:
            seq = self._seq
            self._seq += 1
        return Job(
            seq=seq,
            part_id=part_id if part_id else f"{self.cell}-{seq:08d}",
            product=product,
            t_trigger=time.perf_counter(),
            wall_trigger=time.time(),
        )

    def trigger(self, part_id: str | None = None, product: str = "default") -> Job:
        """Queue one part. Never blocks: a full queue, a pause or a shutdown makes the part an
        ``error`` result (published) and the returned job carries ``error``."""
        job = self._new_job(part_id, product)
        with self._gate:
            if self._closing:
                job.error = ("shutdown", "daemon is stopping; part not inspected")
            elif self._paused:
                job.error = ("paused", "inspection is paused; part not inspected")
            else:
                try:
                    self._q_trig.put_nowait(job)
                    return job
                except queue.Full:
                    job.error = (
                        "overrun",
                        f"trigger queue full ({self._q_trig.maxsize} parts waiting): triggers "
                        f"come faster than the cell inspects",
                    )
        self._emit(job, slot=False)
        return job

    def _emit(self, job: Job, slot: bool = True) -> None:
        """Hand a finished (or failed) job to the output thread. With ``slot`` (parts that went
        through the pipeline) wait for one of the ``results`` slots: backpressure on the infer
        thread, never a drop; without (refused parts, no images) never wait."""
        if slot and not job.slot:
            while not self._slots.acquire(timeout=5.0):
                log.error("results queue full for 5 s (publisher stuck?); still waiting")
            job.slot = True
        job.handed = True
        self._q_out.put(job)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Finish the part in flight, publish queued triggers as errors, join the threads, and
        close the engines. ``timeout_s`` stays under systemd's TimeoutStopSec (30 s) so the
        rest of the shutdown still runs; a thread still busy after it (an engine that hangs)
        keeps its engine open: closing it under a running inference could crash the process
        before the results already published are flushed."""
        with self._gate:
            self._closing = True
        while True:
            try:
                job = self._q_trig.get_nowait()
            except queue.Empty:
                break
            job.error = ("shutdown", "daemon stopped before this part was imaged")
            self._emit(job, slot=False)
        self._q_trig.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if busy:
            log.error(
                "stopping: %s still busy after %.0f s; its engine is left open, the process exits",
                busy,
                timeout_s,
            )
            return
        self._book.close()

    # ------------------------------------------------------------------ stages
    def _next_trigger(self) -> Any:
        """The next queued job; in hardware mode, an armed one when none is queued."""
        if self._hardware_product is None or self._closing or self._paused:
            return self._q_trig.get(timeout=1.0 if self._hardware_product is None else 0.1)
        try:
            return self._q_trig.get_nowait()
        except queue.Empty:
            job = self._new_job(None, self._hardware_product)
            job.armed = True
            return job

    def _stage(
        self,
        name: str,
        get: Callable[[], Any],
        handle: Callable[[Job], None],
        downstream: queue.Queue | None,
    ) -> None:
        """One thread's loop: take a job, handle it; on the stop marker pass it on and end."""
        while True:
            self._last_beat[name] = time.monotonic()
            try:
                job = get()
            except queue.Empty:
                continue
            if job is _STOP:
                if downstream is not None:
                    downstream.put(_STOP)
                return
            try:
                handle(job)
            except Exception as exc:  # a bug: this part's error result, then the next part
                self._rescue(name, job, exc)

    def _rescue(self, stage: str, job: Job, exc: Exception) -> None:
        """Publish ``job`` as ``error``/``internal`` after ``stage`` raised outside its own
        handling, whatever state the part was left in."""
        log.error("part %s (seq %d): %s failed: %s", job.part_id, job.seq, stage, describe(exc))
        log.debug("%s failure", stage, exc_info=True)
        try:
            self._unpin(job)
            if job.verdict != "error" or job.error is None:
                job.verdict, job.score, job.amap = "error", None, None
                job.error = ("internal", f"{stage}: {describe(exc)}")
            if stage == "afrd-output" or job.handed:
                if not job.published:
                    self._sink_as_error(job, exc)
                self._finish(job)
            else:
                self._emit(job)
        except Exception:  # never let the rescue end the thread either
            log.exception("part %s (seq %d) could not be rescued", job.part_id, job.seq)

    def _acquire_one(self, job: Job) -> None:
        job.started = True
        with self._seq_lock:
            self._in_flight += 1
        t0 = time.perf_counter()
        self._pin(job)
        try:
            job.recipe = job.book.get(job.product)
            setup = job.recipe.setup
            if setup is None:
                job.imageset = self._acquire(job.part_id, job.product)
            else:
                job.imageset = self._acquire(job.part_id, job.product, setup)
                job.imageset.meta["recipe"] = job.recipe.name
        except Exception as exc:
            if job.armed and isinstance(exc, FrameTimeout):
                self._idle(job)  # no part came: the line is idle, nothing to publish
                return
            job.fail("acquire", exc)
            log.warning("part %s: acquisition failed: %s", job.part_id, job.error[1])
        job.t_acquire = time.perf_counter() - t0
        job.handed = True
        self._q_acq.put(job)  # blocks when inference is behind: that is the backpressure

    def _idle(self, job: Job) -> None:
        self._unpin(job)
        with self._seq_lock:
            self._in_flight -= 1
            self.idle_grabs += 1
            if self._seq == job.seq + 1:  # nobody took a number since: seq stays gapless
                self._seq = job.seq

    def _infer_one(self, job: Job) -> None:
        job.handed = False  # from here on the infer stage answers for the part
        try:
            if job.error is None:
                self._infer(job)
        finally:
            self._unpin(job)
        self._emit(job)

    def _infer(self, job: Job) -> None:
        recipe = job.recipe
        rt = recipe.runtime  # pinned: stays open until this part is through
        job.threshold = recipe.threshold
        job.model = rt.model
        t0 = time.perf_counter()
        try:
            maps, scores = rt.engine.infer(job.imageset.images)
            job.t_infer = time.perf_counter() - t0
            judge(job, maps, scores, rt.engine.name)  # EngineOutputError: malformed output
        except Exception as exc:
            job.t_infer = time.perf_counter() - t0
            job.verdict, job.score, job.amap = "error", None, None
            job.fail("infer", exc)
            log.warning("part %s: inference failed: %s", job.part_id, job.error[1])

    def _sink_as_error(self, job: Job, exc: Exception) -> None:
        """Publish ``job`` as ``error``/``internal`` with only values any encoder carries."""
        job.verdict, job.score, job.amap = "error", None, None
        job.error = ("internal", f"result could not be published: {type(exc).__name__}")
        if not (isinstance(job.threshold, float) and math.isfinite(job.threshold)):
            job.threshold = None
        job.part_id = job.part_id.encode("utf-8", "replace").decode("utf-8")
        job.product = job.product.encode("utf-8", "replace").decode("utf-8")
        job.published = True
        try:
            self._sink(job, result_message(self.cell, job))
        except Exception:
            log.exception("part %s (seq %d) could not be published at all", job.part_id, job.seq)

    def _output_one(self, job: Job) -> None:
        if job.error is not None:
            job.verdict = "error"
            if job.threshold is None:
                r = job.recipe if job.recipe is not None else self._book.default_recipe
                job.threshold = r.threshold
                job.model = r.model
        job.t_published = time.perf_counter()
        try:
            msg = result_message(self.cell, job)
            job.published = True
            self._sink(job, msg)
        except Exception as exc:  # e.g. a value JSON cannot carry: publish the part as an error
            log.exception("publishing part %s failed; publishing it as an error", job.seq)
            self._sink_as_error(job, exc)
        self._finish(job)

    def _finish(self, job: Job) -> None:
        """The part is out: free its result slot, count it out of in_flight (once)."""
        if job.finished:
            return
        job.finished = True
        if job.slot:
            job.slot = False
            self._slots.release()
        if job.started:
            with self._seq_lock:
                self._in_flight -= 1
