"""Checkpoint -> model bundle (ONNX, optional TensorRT engine) and the engines that run bundles.

Torch-free at import: ``afrd.export.bundle`` and ``afrd.export.engines`` (except the pytorch and
tensorrt backends) are what the daemon uses.
"""
