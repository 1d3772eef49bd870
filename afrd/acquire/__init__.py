"""Acquisition: camera and lighting-controller drivers, pixel formats, the six-light sequencer.

Each driver module declares its own config model next to it; ``afrd.acquire.devices`` opens the
driver a config section names. Nothing here imports the simulator unless a config asks for a
simulated device.
"""
