"""The cell config (one TOML file, typed models that forbid unknown keys), its recipes and the
files they name, read and verified. It opens nothing: `afrd config check`
(``afrd.daemon.config_check``) and `afrd run` open the engines on the daemon side.

It sits below the daemon and calibration, which both open a cell from it, and above the driver
config models it composes (``afrd.acquire``), the bundle it names and the engines' registry and
option models (``afrd.runtime``).
"""
