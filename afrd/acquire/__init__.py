"""Acquisition: camera and lighting-controller drivers, pixel formats, the six-light sequencer.

Each driver module declares its own config model next to it; each device kind registers itself
(``afrd.acquire.registry``, the ``afrd.devices`` entry points) and ``afrd.acquire.devices`` opens
the kind a config section names. Nothing here names the simulator: it registers its own kinds.
"""
