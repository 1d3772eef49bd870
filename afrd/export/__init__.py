"""Checkpoint -> model bundle: ONNX export with parity, precision variants, TensorRT builds."""
