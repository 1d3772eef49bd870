"""Run `afrd web` as a child process (tests, bench/daemon.py) and talk to it over real HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebProcess:
    """`afrd web --config CONFIG` on 127.0.0.1 and a free port; ``start()`` waits until it
    answers. ``get``/``post`` speak its JSON API (``post`` returns (status, body))."""

    def __init__(self, config: Path, *args: str, token: str | None = None) -> None:
        self.config = Path(config)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.token = token
        self.proc: subprocess.Popen | None = None
        self.log_path = self.config.parent / f"web-{self.port}.log"

    def start(self, timeout: float = 30.0) -> WebProcess:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
        argv = [sys.executable, "-m", "afrd", "web", "--config", str(self.config)]
        argv += ["--port", str(self.port), *self.args]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"afrd web exited {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"afrd web did not listen within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def _headers(self, auth: bool) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}

    def get(self, path: str, auth: bool = True, timeout: float = 10.0):
        req = urllib.request.Request(self.base + path, headers=self._headers(auth))
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
            return json.loads(data) if r.headers.get_content_type() == "application/json" else data

    def post(self, path: str, body: dict, auth: bool = True, timeout: float = 15.0):
        headers = {"Content-Type": "application/json", **self._headers(auth)}
        req = urllib.request.Request(self.base + path, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def recorder_toml(captures: Path, pass_sample_rate: float = 1.0) -> str:
    """A ``[recorder]`` table for ``afrd.sim.launch.write_config(extra=...)``."""
    return (
        f'[recorder]\nenabled = true\ndir = "{captures}"\n'
        f"pass_sample_rate = {pass_sample_rate}\nmin_free_bytes = 0\n"
    )


class PageClients:
    """``n`` browsers' worth of event streams on a running page: one that never reads after
    connecting, one that disconnects and reconnects every ``churn_s``, the rest reading
    everything (bench/daemon.py's "pages open" case). ``events`` counts what the readers got."""

    def __init__(self, port: int, n: int, churn_s: float = 0.5) -> None:
        self.port, self.n, self.churn_s = port, n, churn_s
        self.events = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._idle: socket.socket | None = None

    def _open(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return s

    def _reader(self) -> None:
        with self._open() as s:
            s.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    data = s.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                self.events += data.count(b"\n\n")

    def _churn(self) -> None:
        while not self._stop.is_set():
            with self._open() as s:
                s.recv(4096)
            self._stop.wait(self.churn_s)

    def __enter__(self) -> PageClients:
        if self.n >= 1:
            self._idle = self._open()
            self._idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
        kinds = [self._churn] if self.n >= 2 else []
        kinds += [self._reader] * max(0, self.n - 2)
        for fn in kinds:
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        if self._idle is not None:
            self._idle.close()
