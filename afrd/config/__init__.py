"""The cell config (one TOML file, typed models that forbid unknown keys) and `afrd config check`.

It sits below the daemon and calibration, which both open a cell from it, and above the driver
config models it composes (``afrd.acquire``) and the bundle it names (``afrd.runtime``).
"""
