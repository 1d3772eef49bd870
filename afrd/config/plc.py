"""The optional PLC sections of the cell config: ``[opcua]`` and ``[modbus]``.

Both servers run inside the daemon beside ZeroMQ (``afrd.daemon.interfaces``). Their models
forbid unknown keys like the rest of the cell config, bound the connections each serves
(``max_connections``, and a timeout for a silent client), and refuse a setup that would expose
the cell by accident: the OPC UA endpoint without security (policy ``none``) is allowed only on a
loopback host unless ``allow_insecure_remote = true`` says it is meant; secured policies need
the server's certificate and private key. Relative paths are relative to the config file
(``resolve_paths``).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from afrd.errors import ConfigError

_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?$")
_FORMAT_FIELD = re.compile(r"\{([^{}]*)\}")
SECURITY_MODES = ("none", "sign", "sign_and_encrypt")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def check_host(v: str) -> str:
    """A host to bind: an IPv4/IPv6 address or a DNS name (no scheme, no port)."""
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if not _HOST.match(v):
        raise ValueError(f"{v!r} is not an IP address or host name (e.g. 127.0.0.1, 0.0.0.0)")
    return v


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpcUaConfig(_Strict):
    """``[opcua]``: an OPC UA server with the last result, counters, state and ``Trigger``;
    with ``machine_vision`` also the OPC 40100-1 VisionSystem (``interfaces.opcua_mv``)."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 for every interface")
    port: int = Field(4840, ge=1, le=65535, description="TCP port of opc.tcp://host:port/afrd/")
    namespace: str = Field(
        "urn:afrd:inspection", min_length=1, max_length=256, description="namespace URI"
    )
    security: list[Literal["none", "sign", "sign_and_encrypt"]] = Field(
        default_factory=lambda: ["none"],
        min_length=1,
        description="endpoints offered: Basic256Sha256 Sign / SignAndEncrypt, or none",
    )
    certificate: Path | None = Field(None, description="server certificate (DER or PEM)")
    private_key: Path | None = Field(None, description="server private key (PEM)")
    trusted_clients_dir: Path | None = Field(
        None, description="client certificates accepted on secured endpoints (default: any)"
    )
    users_file: Path | None = Field(
        None, description="user:hash lines (python -m afrd.config.plcusers); no anonymous then"
    )
    allow_insecure_remote: bool = Field(
        False, description="offer security 'none' on a non-loopback host (anyone can trigger)"
    )
    max_connections: int = Field(
        32, ge=1, le=1000, description="TCP connections served at once; more are closed at once"
    )
    hello_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="a connection that sends nothing this long is closed"
    )
    machine_vision: bool = Field(
        False,
        description="serve OPC UA for Machine Vision (OPC 40100-1) beside Cell: its Halt and "
        "Reset pause the cell, PrepareRecipe switches recipes, so it is opt-in",
    )
    machine_vision_results: int = Field(
        1000, ge=1, le=100_000, description="results ResultManagement keeps (older are dropped)"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @field_validator("security")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"each security mode once, got {v}")
        return v

    @model_validator(mode="after")
    def _secure(self) -> OpcUaConfig:
        secured = [m for m in self.security if m != "none"]
        if secured and (self.certificate is None or self.private_key is None):
            raise ValueError(
                f"security {secured} needs certificate and private_key (the server's "
                f"Basic256Sha256 key pair)"
            )
        if "none" in self.security and not is_loopback(self.host):
            if not self.allow_insecure_remote:
                raise ValueError(
                    f"host {self.host!r} is not loopback and security includes 'none': anyone "
                    f"on the network could trigger parts; use security = ['sign_and_encrypt'] "
                    f"with a certificate, or set allow_insecure_remote = true"
                )
        return self

    def resolve_paths(self, base: Path) -> None:
        for key in ("certificate", "private_key", "trusted_clients_dir", "users_file"):
            p = getattr(self, key)
            if p is not None and not p.is_absolute():
                setattr(self, key, base / p)


class ModbusConfig(_Strict):
    """``[modbus]``: a Modbus TCP server with the trigger/busy/done handshake (README map)."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 for every interface")
    port: int = Field(
        5020, ge=0, le=65535, description="502 needs CAP_NET_BIND_SERVICE; 0 = any free port"
    )
    products: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="product index N (register 3) = products[N-1]; 0 = trigger.product; "
        "empty: the cell's [[product]] names in order",
    )
    part_id_format: str = Field(
        "{n}", max_length=64, description="part id from the part number n, e.g. 'SN-{n:08d}'"
    )
    max_connections: int = Field(
        32, ge=1, le=1000, description="TCP connections served at once; more are closed at once"
    )
    idle_timeout_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="a client that sends nothing this long is dropped; 0: never",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @field_validator("products")
    @classmethod
    def _products(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if not p or len(p) > 256 or not p.isprintable():
                raise ValueError(f"products[{i}]: {p!r} must be 1-256 printable characters")
        return v

    @field_validator("part_id_format")
    @classmethod
    def _format(cls, v: str) -> str:
        fields = _FORMAT_FIELD.findall(v)
        if not fields or any(not f.startswith("n") or f[1:2] not in ("", ":") for f in fields):
            raise ValueError(f"{v!r} must use only the field {{n}} (e.g. 'SN-{{n:08d}}')")
        try:
            v.format(n=4294967295)
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"{v!r} is not a usable format for an integer n: {exc}") from None
        return v


def trusted_certificates(d: Path) -> set[bytes]:
    """The DER bytes of every certificate (.der/.pem/.crt/.cer) in ``d``; ConfigError naming
    the file that is not one."""
    from cryptography.hazmat.primitives.serialization import Encoding

    if not d.is_dir():
        raise ConfigError(f"opcua.trusted_clients_dir: {d} is not a directory")
    out = set()
    for p in sorted(d.iterdir()):
        if p.suffix.lower() not in (".der", ".pem", ".crt", ".cer"):
            continue
        out.add(_certificate(p, "opcua.trusted_clients_dir").public_bytes(Encoding.DER))
    return out


def _certificate(p: Path, key: str):  # -> x509.Certificate
    from cryptography import x509

    try:
        raw = p.read_bytes()
        if b"-----BEGIN" in raw:
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}: {p}: not a readable X.509 certificate: {exc}") from None


def check_plc_files(opcua: OpcUaConfig | None) -> None:
    """What `afrd run` would trip over when the OPC UA server starts: the certificate, private
    key, trusted client certificates and users file, each readable and of the right kind."""
    if opcua is None or not opcua.enabled:
        return
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from afrd.config.plcusers import load_users

    if opcua.certificate is not None:
        _certificate(opcua.certificate, "opcua.certificate")
    if opcua.private_key is not None:
        try:
            load_pem_private_key(opcua.private_key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"opcua.private_key: {opcua.private_key}: not a readable unencrypted PEM "
                f"private key: {exc}"
            ) from None
    if opcua.trusted_clients_dir is not None:
        trusted_certificates(opcua.trusted_clients_dir)
    if opcua.users_file is not None:
        load_users(opcua.users_file)
