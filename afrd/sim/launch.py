"""Run the real daemon as a child process on a simulated cell: used by `afrd demo`, the tests
and bench/daemon.py.

``write_config`` writes a sim-cell config on ipc:// sockets; ``Daemon`` starts `afrd run` and
waits for its READY=1 on a private $NOTIFY_SOCKET (the same signal systemd waits for).
``make_brightness_bundle`` writes a genuine ONNX graph that is NOT a model (anomaly map = mean
brightness, score = its max): a known, cheap function for tests and timing the daemon itself.
It needs the ``onnx`` package (the train extra).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import zmq

from afrd.config.cell import load_config
from afrd.daemon.ctl import request
from afrd.data.lights import DEFAULT_LIGHTS
from afrd.sim.config import sim_lighting_conditions

REPO = Path(__file__).resolve().parents[2]


def make_brightness_bundle(
    out: Path, size: int = 64, lights=DEFAULT_LIGHTS, threshold=0.5, nan_score: bool = False
):
    """The brightness bundle in ``out``. ``nan_score``: the score is sqrt(-max brightness)
    instead, NaN for every lit part (the daemon's ``nan_score`` error path)."""
    import onnx
    from onnx import TensorProto, helper

    from afrd.runtime.bundle import create_bundle

    out.mkdir(parents=True, exist_ok=True)
    n = len(lights)
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes_m"], ["m"], keepdims=0),
        helper.make_node("Div", ["m", "k255"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map", "axes_s"], ["score"], keepdims=0),
    ]
    if nan_score:
        nodes[-1:] = [
            helper.make_node("ReduceMax", ["anomaly_map", "axes_s"], ["mx"], keepdims=0),
            helper.make_node("Neg", ["mx"], ["neg"]),
            helper.make_node("Sqrt", ["neg"], ["score"]),
        ]
    inits = [
        helper.make_tensor("axes_m", TensorProto.INT64, [2], [1, 4]),
        helper.make_tensor("axes_s", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("k255", TensorProto.FLOAT, [], [255.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", n, size, size, 3])],
        [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", size, size]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(out / "model.onnx"))
    b = create_bundle(
        out,
        lights=lights,
        input_size=(size, size),
        model={"kind": "test-brightness", "teacher_weights": "none"},
        name="test-brightness",
    )
    b.set_threshold(threshold, source="test")
    return b


def sim_lighting_toml(lights: Sequence[str] = DEFAULT_LIGHTS) -> str:
    out = []
    for c in sim_lighting_conditions(lights):
        chans = ", ".join(f"{{channel = {s.channel}, level = {s.level}}}" for s in c.channels)
        out.append(f'[[lighting]]\nname = "{c.name}"\nchannels = [{chans}]\n')
    return "\n".join(out)


def write_config(
    d: Path,
    bundle: Path,
    controller: str = 'kind = "sim"',
    size: int = 64,
    engine: str = "onnxruntime",
    trigger: str = 'mode = "control"',
    extra: str = "",
    heatmaps: bool = True,
    threshold: float | None = None,
    defect_rate: float = 0.5,
    *,
    cell: str = "t1",
    camera: str = "seed = 7",
    engine_options: str | None = None,
    sockets_dir: Path | None = None,
    header: str = "",
) -> Path:
    """``d``/cell.toml: a simulated cell on ipc:// sockets in ``sockets_dir`` (default ``d``; no
    TCP ports to collide). ``camera``, ``controller``, ``trigger``: TOML lines of those tables
    (the camera's kind, size and defect_rate are written here); ``engine_options``: the inside
    of the options table (default: one ONNX Runtime thread); ``extra``: top-level TOML lines or
    further tables; ``header``: comment lines on top."""
    sockets_dir = d if sockets_dir is None else sockets_dir
    if engine_options is None:
        engine_options = "threads = 1" if engine == "onnxruntime" else ""
    cfg = f"""{header}cell = "{cell}"
heatmaps = {str(heatmaps).lower()}
{"threshold = " + repr(threshold) if threshold is not None else ""}
{extra}

[camera]
kind = "sim"
size = {size}
{camera}
defect_rate = {defect_rate}

[controller]
{controller}

[bundle]
path = "{bundle}"

[engine]
kind = "{engine}"
options = {{ {engine_options} }}

[trigger]
{trigger}

[sockets]
pub = "ipc://{sockets_dir}/pub.sock"
control = "ipc://{sockets_dir}/ctl.sock"
heartbeat_s = 0.5

[metrics]
port = 0

{sim_lighting_toml()}
"""
    p = d / "cell.toml"
    p.write_text(cfg)
    return p


class Daemon:
    """`afrd run` as a child process; ``start()`` waits for READY=1 on a notify socket.

    The notify socket lives in a private ``/tmp/afrd-notify-*`` directory (short: AF_UNIX paths
    are limited to ~107 bytes). ``stop()`` removes it, and so does a ``start()`` that fails (after
    killing the child); should neither run, it goes when this object is collected or at exit.
    """

    def __init__(self, config: Path, env: dict | None = None) -> None:
        self.config = config
        self.dir = config.parent
        sockets = load_config(config).sockets
        self.control, self.pub = sockets.control, sockets.pub
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.notes: list[str] = []
        self.ctx = zmq.Context.instance()
        self.log = None
        self._nsock: socket.socket | None = None
        self._notes_stop = threading.Event()
        self._notes_thread: threading.Thread | None = None
        self._notify_dir: weakref.finalize | None = None

    def start(self, timeout: float = 60.0) -> Daemon:
        tmp = tempfile.mkdtemp(prefix="afrd-notify-", dir="/tmp")
        self._notify_dir = weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)
        self._notes_stop.clear()
        try:
            sock_path = os.path.join(tmp, "notify")
            self._nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._nsock.bind(sock_path)
            self._nsock.settimeout(0.2)
            # drain notifications as systemd does (a full datagram queue would drop them)
            self._notes_thread = threading.Thread(target=self._read_notes, daemon=True)
            self._notes_thread.start()
            # the checkout's afrd, whatever the venv has installed (the child runs in self.dir)
            path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
            env = dict(os.environ, NOTIFY_SOCKET=sock_path, OMP_NUM_THREADS="1", PYTHONPATH=path)
            env.update(self.env)
            self.log = open(self.dir / "daemon.log", "w")  # noqa: SIM115
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "afrd", "run", "--config", str(self.config)],
                cwd=self.dir,
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.poll_notes()
                if any("READY=1" in n for n in self.notes):
                    return self
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.output()}")
            raise RuntimeError(f"daemon not READY in {timeout}s:\n{self.output()}")
        except BaseException:
            self.stop(signal.SIGKILL, timeout=10.0)
            raise

    def _read_notes(self) -> None:
        while not self._notes_stop.is_set():
            try:
                self.notes.append(self._nsock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return

    def poll_notes(self) -> list[str]:
        """The sd_notify messages received so far (read continuously in the background)."""
        time.sleep(0.05)
        return self.notes

    def output(self) -> str:
        try:
            return (self.dir / "daemon.log").read_text()[-6000:]
        except OSError:
            return ""

    def ctl(self, req: dict | bytes, timeout_s: float = 10.0) -> dict:
        """One request on the daemon's control socket; TimeoutError when it does not answer."""
        reply = request(self.control, req, timeout_s)
        if reply is None:
            raise TimeoutError(f"no reply from {self.control} within {timeout_s} s")
        return reply

    def subscriber(self, topics=(b"",)) -> zmq.Socket:
        s = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 100000)
        for t in topics:
            s.setsockopt(zmq.SUBSCRIBE, t)
        s.connect(self.pub)
        return s

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the child and wait (kill after ``timeout``); close and remove the notify socket.
        Returns the child's exit code (0 if none was started). Safe to call again."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self._notes_thread is not None:
                if self.proc is not None:
                    time.sleep(0.3)  # the reader's last recv() picks up STOPPING=1
                self._notes_stop.set()
                self._notes_thread.join(timeout=2)
                self._notes_thread = None
        finally:
            if self.log is not None:
                self.log.close()
            if self._nsock is not None:
                self._nsock.close()
            if self._notify_dir is not None:
                self._notify_dir()  # removes the directory (once)
        return 0 if self.proc is None else self.proc.returncode


def wait_subscribed(sub: zmq.Socket, timeout: float = 10.0) -> None:
    """Block until the first heartbeat arrives: the subscription is live."""
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poller.poll(200):
            frames = sub.recv_multipart()
            if frames[0].startswith(b"status."):
                return
    raise TimeoutError("no heartbeat from the daemon")


def collect(sub: zmq.Socket, want: int, kind: str = "result", timeout: float = 30.0) -> list:
    """Receive until ``want`` messages of ``kind``; returns every message's frames (all kinds)."""
    out, n = [], 0
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + timeout
    while n < want and time.monotonic() < deadline:
        if poller.poll(200):
            frames = sub.recv_multipart()
            out.append(frames)
            if frames[0].startswith(kind.encode() + b"."):
                n += 1
    return out
