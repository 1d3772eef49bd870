"""A bundle's runtime in a process of its own, at the lowest CPU priority: the shadow run's
candidate (issue 25).

In the daemon's process a candidate competes with the live path for the interpreter lock and,
through the threads its engine starts when it is opened (at the opener's priority), for the
CPU: BENCHMARKS.md measured +3.5 to +4.3 ms on the live p50 of the 2-core box that way. Here a
child process opens the engine at normal priority (a one-time cost, as a reload's: at idle
priority a busy box starved the opening for tens of seconds and an OPC UA client waiting on
`ShadowStart` gave up), then puts every one of its threads at SCHED_IDLE (nice 19 where that is
refused), the engine's own pool included, so it runs only on CPU time the live path leaves and
holds no lock the live path needs. A part's images go over a pipe (a pickled array, ~1 MB for six
256 px lights); only the scores come back. The child ends when told, when the pipe closes (the
daemon died) or when it is killed; :meth:`IsolatedRuntime.infer` then raises, it never hangs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from afrd.errors import AfrdError

log = logging.getLogger("afrd.runtime.isolated")

POLL_S = 0.2  # how often a wait looks whether the child is still there
STOP_GRACE_S = 2.0  # a child still busy after this when told to stop is killed


class CandidateError(AfrdError):
    """The child process could not open the bundle, or it ended."""


def lowest_priority(tid: int = 0) -> None:
    """Thread ``tid`` (0: the calling one; a Linux thread is a task, threads it starts later
    inherit this): SCHED_IDLE, so a normal thread that wakes takes the CPU from it at once;
    nice 19 where that is refused."""
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid or threading.get_native_id(), 19)
    except (OSError, AttributeError) as exc:
        log.info("runs at normal priority (%s)", exc)


def _all_threads_lowest() -> None:
    """Every thread of this process, those the engine started when it was opened included, and
    its session's autogroup (``_own_group``) at nice 19."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        lowest_priority(tid)
    try:
        Path("/proc/self/autogroup").write_text("19")
    except OSError:
        pass


class IsolatedRuntime:
    """What the shadow run needs of a :class:`afrd.runtime.loader.Runtime` (``engine.infer``,
    ``engine.name``, ``lights``, ``model``, the thresholds, ``close``), the engine in a child.
    ``infer`` is called from one thread at a time."""

    def __init__(self, proc: Any, conn: Any, kind: str, ready: Mapping[str, Any]) -> None:
        self._proc, self._conn = proc, conn
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.name = f"{kind} (process {proc.pid})"
        self.pid: int = proc.pid
        self.threshold: float | None = ready["threshold"]
        self.model_name: str = ready["model_name"]
        self.model_sha256: str = ready["model_sha256"]
        self.lights: tuple[str, ...] = tuple(ready["lights"])
        self.product_thresholds: dict[str, float] = dict(ready["product_thresholds"])

    @property
    def engine(self) -> IsolatedRuntime:
        return self

    @property
    def model(self) -> dict[str, str]:
        return {"name": self.model_name, "sha256": self.model_sha256}

    def infer(self, images: np.ndarray) -> tuple[None, np.ndarray]:
        """(None, scores) of one part: the maps stay in the child."""
        with self._lock:
            try:
                self._conn.send(np.ascontiguousarray(images))
                _wait(self._proc, self._conn, self._closing)
                status, value = self._conn.recv()
            except (OSError, EOFError) as exc:
                raise CandidateError(self._ended(exc)) from None
        if status != "ok":
            raise CandidateError(f"candidate engine: {value}")
        return None, value

    def alive(self) -> bool:
        return self._proc.is_alive()

    def close(self) -> None:
        """Tell the child to end; kill it when it does not within ``STOP_GRACE_S`` (a part in
        its engine is not waited for)."""
        self._closing.set()
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._proc.join(STOP_GRACE_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(STOP_GRACE_S)
        self._conn.close()

    def _ended(self, exc: BaseException) -> str:
        if self._closing.is_set():
            return "candidate process stopped"
        self._proc.join(POLL_S)
        code = self._proc.exitcode
        return f"candidate process {self.pid} ended (exit code {code}): {type(exc).__name__}"


def open_isolated(
    path: Path,
    kind: str,
    options: Mapping[str, Any],
    threshold: float | None = None,
    products: Sequence[str] = (),
    timeout_s: float = 600.0,
) -> IsolatedRuntime:
    """``load_runtime(path, kind, options, threshold, products=products)`` in a new process
    (spawned: nothing of the daemon's threads or sockets is inherited). Raises
    :class:`CandidateError` with the child's message when it cannot open the bundle."""
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe(duplex=True)
    args = (there, str(path), kind, dict(options), threshold, tuple(products))
    proc = ctx.Process(target=_serve, args=args, name="afrd-candidate", daemon=True)
    proc.start()
    there.close()
    closing = threading.Event()
    try:
        _wait(proc, here, closing, deadline=time.monotonic() + timeout_s)
        status, value = here.recv()
    except (OSError, EOFError, TimeoutError) as exc:
        proc.kill()
        proc.join(STOP_GRACE_S)
        here.close()
        raise CandidateError(
            f"candidate process for {path} gave no answer ({type(exc).__name__}: {exc}; "
            f"exit code {proc.exitcode})"
        ) from None
    if status != "ready":
        proc.join(STOP_GRACE_S)
        here.close()
        raise CandidateError(str(value))
    return IsolatedRuntime(proc, here, kind, value)


def _wait(proc: Any, conn: Any, closing: threading.Event, deadline: float | None = None) -> None:
    """Until ``conn`` has something to read; raises EOFError when the child is gone or the
    runtime is closing, TimeoutError past ``deadline``."""
    while not conn.poll(POLL_S):
        if closing.is_set() or not proc.is_alive():
            raise EOFError("no reply")
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("no reply in time")


def _own_group() -> None:
    """A session of its own, so that where the kernel groups CPU time by session (autogroup:
    a desktop or a shell, not a systemd unit, which is one cgroup) the candidate is not charged
    to the daemon's group. Best effort."""
    try:
        os.setsid()
    except OSError:
        pass


def _serve(conn: Any, path: str, kind: str, options: dict, threshold, products) -> None:
    """The child: open the bundle, answer ``ready`` (or ``error``), then score each array it
    is sent until ``None`` or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on a foreground daemon: it decides
    _own_group()
    from afrd.runtime.loader import load_runtime

    try:
        rt = load_runtime(Path(path), kind, options, threshold, None, None, products)
    except Exception as exc:  # noqa: BLE001 - the parent shows it; a bundle error names itself
        text = str(exc) if isinstance(exc, AfrdError) else f"{type(exc).__name__}: {exc}"
        conn.send(("error", text))
        return
    _all_threads_lowest()  # from here on: only what the live path leaves
    conn.send(
        (
            "ready",
            {
                "threshold": rt.threshold,
                "model_name": rt.model_name,
                "model_sha256": rt.model_sha256,
                "lights": list(rt.lights),
                "product_thresholds": dict(rt.product_thresholds),
            },
        )
    )
    try:
        while True:
            try:
                images = conn.recv()
            except (EOFError, OSError):
                break
            if images is None:
                break
            try:
                _maps, scores = rt.engine.infer(images)
                conn.send(("ok", np.asarray(scores, dtype=np.float64).reshape(-1)))
            except Exception as exc:  # noqa: BLE001 - one part's error, the next is judged
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        rt.close()
