"""PLC test helpers: free ports, a sim-cell config with [opcua]/[modbus] sections, ZeroMQ results
by sequence number, and a self-signed OPC UA certificate made with `cryptography`."""

from __future__ import annotations

import datetime as _dt
import socket
import time
from pathlib import Path

import zmq
from _daemon_helpers import wait_for  # noqa: F401 - the PLC tests import it from here

from afrd.daemon.verdict import parse_message
from afrd.sim.launch import write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plc_config(
    d: Path, bundle: Path, opcua: str | None = None, modbus: str | None = None, more: str = ""
) -> Path:
    """A sim cell (64 px, brightness bundle) with the given [opcua] / [modbus] table bodies and
    ``more`` TOML (e.g. [[product]] recipes)."""
    extra = more + "\n\n" if more else ""
    if opcua is not None:
        extra += f"[opcua]\n{opcua}\n\n"
    if modbus is not None:
        extra += f"[modbus]\n{modbus}\n\n"
    return write_config(d, bundle, heatmaps=False, extra=extra)


def zmq_results(sub: zmq.Socket, want: int, timeout: float = 30.0) -> dict[int, dict]:
    """Read ``sub`` until ``want`` results came; {seq: result}. Fails on a seq published twice."""
    out: dict[int, dict] = {}
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        if poller.poll(200):
            kind, _, msg, _ = parse_message(sub.recv_multipart())
            if kind == "result":
                assert msg["seq"] not in out, f"seq {msg['seq']} published twice"
                out[msg["seq"]] = msg
    assert len(out) == want, f"{len(out)} of {want} results on ZeroMQ: {out}"
    return out


def self_signed(d: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A 2048-bit RSA key and a self-signed certificate for an OPC UA application ``uri``:
    (certificate.der, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / f"{name}.der", d / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
