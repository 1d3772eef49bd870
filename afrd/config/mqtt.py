"""``[mqtt]``: the cell on the plant's MQTT broker (the link: ``afrd.daemon.interfaces.mqtt``).

The model forbids unknown keys like the rest of the cell config and refuses a setup that would
leak by accident: a broker that is not on loopback needs TLS (or ``allow_insecure_remote``).
Relative paths are relative to the config file (``resolve_paths``). ``check_mqtt_files`` reads
what the link would trip over at start (CA, client certificate and key, password file, the
queue's folder), so `afrd config check` and `afrd run` refuse the same files; ``tls_context``
and ``read_password`` are the one way both read them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import ssl
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from afrd.config.plc import check_host, is_loopback
from afrd.errors import ConfigError

_BROKER = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:/\s]+)(?::(?P<port>[0-9]{1,5}))?$")
_TOPIC_FIELD = re.compile(r"\{([^{}]*)\}")
TOPIC_FIELDS = ("site", "line", "cell")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _topic_level(v: str, what: str) -> str:
    """One level of a topic: no '/', no wildcard, not a $-topic, printable."""
    if not v or len(v) > 128 or not v.isprintable() or any(c in v for c in "/+#") or v[0] == "$":
        raise ValueError(
            f"{v!r}: {what} must be 1-128 printable characters without '/', '+', '#' "
            f"and not start with '$'"
        )
    return v


class TlsConfig(_Strict):
    """``[mqtt.tls]``: TLS to the broker; the broker's certificate is verified by default."""

    enabled: bool = True
    ca_file: Path | None = Field(
        None,
        description="CA certificate(s) (PEM) the broker's certificate must chain to; "
        "default: the system's trust store",
    )
    certificate: Path | None = Field(None, description="client certificate (PEM) if required")
    private_key: Path | None = Field(None, description="the client certificate's key (PEM)")
    verify: bool = Field(
        True, description="check the broker's certificate and host name (false: testing only)"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together (the client's key pair)")
        return self


class SparkplugConfig(_Strict):
    """``[mqtt.sparkplug]``: publish as a Sparkplug B edge node instead of afrd's JSON topics."""

    enabled: bool = False
    group_id: str = Field("afrd", description="Sparkplug group id")
    edge_node_id: str | None = Field(None, description="edge node id (default: the cell id)")

    @field_validator("group_id", "edge_node_id")
    @classmethod
    def _level(cls, v: str | None) -> str | None:
        return None if v is None else _topic_level(v, "a Sparkplug id")


class MqttConfig(_Strict):
    """``[mqtt]``: results (store and forward), status, heatmaps and counts on an MQTT broker."""

    enabled: bool = True
    brokers: list[str] = Field(
        ...,
        min_length=1,
        max_length=16,
        description="host:port of each broker, tried in order (failover); port default 8883 "
        "with TLS, 1883 without",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    allow_insecure_remote: bool = Field(
        False, description="plain MQTT (no TLS) to a broker that is not on loopback"
    )
    client_id: str | None = Field(None, description="MQTT client id (default: afrd-<cell>)")
    username: str | None = Field(None, min_length=1, max_length=256)
    password_file: Path | None = Field(None, description="file whose first line is the password")
    keepalive_s: int = Field(30, ge=1, le=3600, description="MQTT keep-alive")
    connect_timeout_s: float = Field(
        5.0, gt=0, le=20, description="TCP connect limit (a stop may wait this long for it)"
    )
    reconnect_max_s: float = Field(
        10.0, ge=0.1, le=600, description="longest wait between connection attempts"
    )
    topic_root: str = Field(
        "afrd/{site}/{line}/{cell}", description="topics are <root>/result, /status, ..."
    )
    site: str | None = Field(None, description="{site} in topic_root")
    line: str | None = Field(None, description="{line} in topic_root")
    status_interval_s: float = Field(
        5.0, ge=0.1, le=3600, description="period of the retained status and counts"
    )
    heatmaps: Literal["off", "all", "not-pass"] = Field(
        "off", description="publish the heatmap PNG of every part, or of fail/error parts only"
    )
    store: Path = Field(
        Path("/var/lib/afrd/mqtt.sqlite3"), description="on-disk queue of unacknowledged results"
    )
    max_queued: int = Field(
        100_000, ge=1, le=100_000_000, description="results kept while the broker is away"
    )
    max_queued_bytes: int = Field(
        256 * 1024**2, ge=1024, le=2**40, description="bytes of results kept (the oldest go)"
    )
    inflight: int = Field(
        32, ge=1, le=1000, description="results published and not yet acknowledged at once"
    )
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig)

    @field_validator("brokers")
    @classmethod
    def _brokers(cls, v: list[str]) -> list[str]:
        for i, b in enumerate(v):
            m = _BROKER.match(b)
            if m is None or (m["port"] is not None and not 1 <= int(m["port"]) <= 65535):
                raise ValueError(f"brokers[{i}]: {b!r} is not host:port (IPv6 as [::1]:8883)")
            try:
                check_host(m["host"].strip("[]"))
            except ValueError as exc:
                raise ValueError(f"brokers[{i}]: {exc}") from None
        return v

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v) > 128 or not v.isprintable()):
            raise ValueError(f"{v!r} must be 1-128 printable characters")
        return v

    @field_validator("site", "line")
    @classmethod
    def _part(cls, v: str | None) -> str | None:
        return None if v is None else _topic_level(v, "a topic level")

    @field_validator("topic_root")
    @classmethod
    def _root(cls, v: str) -> str:
        fields = _TOPIC_FIELD.findall(v)
        bad = [f for f in fields if f not in TOPIC_FIELDS]
        if bad:
            raise ValueError(f"{v!r} may use only the fields {{site}}, {{line}}, {{cell}}")
        literal = _TOPIC_FIELD.sub("x", v)
        if "{" in literal or "}" in literal:
            raise ValueError(f"{v!r}: unbalanced braces")
        for level in literal.split("/"):
            _topic_level(level, "each level of topic_root")
        return v

    @model_validator(mode="after")
    def _checks(self) -> MqttConfig:
        for key in ("site", "line"):
            if "{" + key + "}" in self.topic_root and getattr(self, key) is None:
                raise ValueError(f"topic_root {self.topic_root!r} uses {{{key}}}: set {key}")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if not self.tls.enabled and not self.allow_insecure_remote:
            remote = [b for b in self.brokers if not is_loopback(broker_address(b, False)[0])]
            if remote:
                raise ValueError(
                    f"tls.enabled = false with brokers {remote} off this machine: results and "
                    f"the password would cross the network in clear; enable TLS or set "
                    f"allow_insecure_remote = true"
                )
        if self.sparkplug.enabled and self.heatmaps != "off":
            raise ValueError("heatmaps: Sparkplug mode publishes no heatmaps; set heatmaps = 'off'")
        return self

    def resolve_paths(self, base: Path) -> None:
        for holder, key in (
            (self, "password_file"),
            (self, "store"),
            (self.tls, "ca_file"),
            (self.tls, "certificate"),
            (self.tls, "private_key"),
        ):
            p = getattr(holder, key)
            if p is not None and not p.is_absolute():
                setattr(holder, key, base / p)

    def root(self, cell: str) -> str:
        """The topic root with its fields filled in."""
        return self.topic_root.format(site=self.site, line=self.line, cell=cell)

    def addresses(self) -> list[tuple[str, int]]:
        return [broker_address(b, self.tls.enabled) for b in self.brokers]


def broker_address(broker: str, tls: bool) -> tuple[str, int]:
    """'host:port' -> (host, port); the port defaults to 8883 with TLS, 1883 without."""
    m = _BROKER.match(broker)
    if m is None:
        raise ConfigError(f"mqtt.brokers: {broker!r} is not host:port")
    port = int(m["port"]) if m["port"] else (8883 if tls else 1883)
    return m["host"].strip("[]"), port


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """The client's TLS context (None without TLS); ConfigError naming the key of a file that
    does not load."""
    if not cfg.tls.enabled:
        return None
    t = cfg.tls
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if t.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(t.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"mqtt.tls.ca_file: {t.ca_file}: not a readable PEM CA certificate: {_why(exc)}"
            ) from None
    if t.certificate is not None and t.private_key is not None:
        try:
            ctx.load_cert_chain(str(t.certificate), str(t.private_key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"mqtt.tls.certificate/private_key: {t.certificate}, {t.private_key}: not a "
                f"readable PEM certificate and matching unencrypted key: {_why(exc)}"
            ) from None
    if not t.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_password(cfg: MqttConfig) -> str | None:
    """The password (the file's first line); ConfigError naming mqtt.password_file."""
    p = cfg.password_file
    if p is None:
        return None
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"mqtt.password_file: {p}: cannot read: {_why(exc)}") from None
    pw = text.splitlines()[0] if text else ""
    if not pw:
        raise ConfigError(f"mqtt.password_file: {p}: the first line (the password) is empty")
    return pw


def check_mqtt_files(cfg: MqttConfig | None) -> None:
    """What `afrd run` would trip over when the link starts (ConfigError naming the key)."""
    if cfg is None or not cfg.enabled:
        return
    need = [("paho", "paho-mqtt")] + [("pysparkplug", "pysparkplug")] * cfg.sparkplug.enabled
    for module, package in need:
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"mqtt: {package} is not installed (pip install 'afrd[mqtt]')")
    tls_context(cfg)
    read_password(cfg)
    folder = cfg.store.parent
    if not folder.is_dir():
        raise ConfigError(f"mqtt.store: {cfg.store}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (
        cfg.store.exists() and not os.access(cfg.store, os.R_OK | os.W_OK)
    ):
        raise ConfigError(f"mqtt.store: {cfg.store}: not writable by this user")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
