"""The simulated cell: a renderer-driven camera, the lighting-controller emulator on a pty,
the demo and the launcher tests use. Production code imports this only when a config names a
simulated device."""
