"""A real MQTT broker for the tests and the bench: Debian's mosquitto on a free loopback port,
TLS with a CA and a server certificate made here (``cryptography``), logins from a password
file made with ``mosquitto_passwd``, sessions persisted across a restart (so a subscriber's
persistent session, and what was queued for it, survive the broker being stopped); and
``Subscriber``, a paho client that records what arrives.

``missing()`` says why no broker can run here (None when one can): the tests skip with it.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from afrd.daemon.interfaces.mqtt_session import new_client


def missing() -> str | None:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (Debian: apt-get install mosquitto; `make test` does)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(d: Path, name: str = "afrd test CA") -> tuple[Path, object, object]:
    """A CA: (its certificate's PEM file, certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _dt.datetime.now(_dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    d.mkdir(parents=True, exist_ok=True)
    path = d / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_server_cert(d: Path, ca_cert: object, ca_key: object) -> tuple[Path, Path]:
    """A certificate for localhost / 127.0.0.1 signed by the CA: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = d / "server.pem", d / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Broker:
    """mosquitto in ``d`` on 127.0.0.1:``port``: TLS (``ca_file`` signs its certificate) and
    the logins of ``users`` (name -> password), or plain MQTT with ``tls=False``."""

    def __init__(self, d: Path, users: dict[str, str], tls: bool = True) -> None:
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.ca_file, ca_cert, ca_key = make_ca(self.dir / "ca")
        cert, key = make_server_cert(self.dir / "ca", ca_cert, ca_key)
        passwd = self.dir / "passwd"
        passwd.touch()
        for user, pw in users.items():
            subprocess.run(
                [_tool("mosquitto_passwd"), "-b", str(passwd), user, pw],
                check=True,
                capture_output=True,
            )
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            "persistence true",
            f"persistence_location {self.dir}/",
            "max_queued_messages 100000",
            f"log_dest file {self.dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"listener {self.port} 127.0.0.1",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto', who cannot read our files
        if tls:
            lines += [f"cafile {self.ca_file}", f"certfile {cert}", f"keyfile {key}"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        self.proc = subprocess.Popen(
            [_tool("mosquitto"), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto not listening on {self.port} in {timeout} s: {self.log()}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its sessions) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text()[-3000:]
        except OSError:
            return ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Subscriber:
    """A paho client on ``broker`` subscribed to ``topics`` at QoS 1; ``messages`` holds
    (topic, payload, retained) as they arrive. ``persistent``: a session the broker keeps
    (and queues for) while this client or the broker is away."""

    def __init__(
        self,
        broker: Broker,
        user: str,
        password: str,
        topics: list[str],
        client_id: str = "afrd-test-sub",
        persistent: bool = True,
    ) -> None:
        import ssl

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()  # connected and subscribed
        self._topics = topics
        c = self.client = new_client(client_id, clean_session=not persistent)
        if broker.tls:
            ctx = ssl.create_default_context(cafile=str(broker.ca_file))
            c.tls_set_context(ctx)
        c.username_pw_set(user, password)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *_: self.ready.clear()
        c.on_subscribe = lambda *_: self.ready.set()
        c.on_message = self._on_message
        c.connect_async("127.0.0.1", broker.port, keepalive=5)
        c.loop_start()

    def _on_connect(self, client: object, _ud: object, _flags: object, rc: object, *_: object):
        if rc == 0:
            self.client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c: object, _ud: object, m: object) -> None:
        with self.lock:
            self.messages.append((m.topic, m.payload, bool(m.retain)))

    def take(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
