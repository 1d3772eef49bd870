"""What runs a model on a cell: bundle loading and verification, and the engines (ONNX Runtime,
TensorRT, PyTorch, null) behind one interface. Torch-free at import."""
