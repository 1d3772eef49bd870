"""Run `afrd web` as a child process (tests, bench/daemon.py) and talk to it over real HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
