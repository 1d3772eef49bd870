"""The checks of a cell config that read files and bind nothing: the sockets (CURVE keys for a
wide control bind, ipc:// paths another live process holds), the PLC servers' and the MQTT
link's files, the audit log's folder.

`afrd run` makes them before it binds; `afrd config check` (``afrd.daemon.config_check``) makes
them with the rest: the recipes' files here (``afrd.config.recipes``), the engines opened there.
"""

from __future__ import annotations

from afrd.config.cell import CellConfig
from afrd.config.endpoints import check_ipc_free, curve_server_keys
from afrd.config.mqtt import check_mqtt_files
from afrd.config.plc import check_plc_files
from afrd.config.roles import check_access


def check_sockets(cfg: CellConfig) -> None:
    """ConfigError when the daemon could not or must not bind its sockets as configured."""
    sk = cfg.sockets
    curve_server_keys(sk.curve_keys_dir, sk.control, sk.allow_any_client)
    check_ipc_free(sk.pub, "sockets.pub")
    check_ipc_free(sk.control, "sockets.control")
    check_plc_files(cfg.opcua)  # the OPC UA server's certificate, key and users file
    check_mqtt_files(cfg.mqtt)  # the broker link's CA, key pair, password file, queue folder
    check_access(cfg.access)  # a configured audit log's folder
