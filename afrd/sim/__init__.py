"""The simulated cell: a renderer-driven camera, the lighting-controller emulator on a pty,
the demo and the launcher tests use. Its device kinds (``config``, ``devices``) are registered
as entry points and loaded with the others when a config is validated; the camera, emulator
and renderer are imported only when a config opens a simulated device."""
