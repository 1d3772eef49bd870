"""afrd: multi-lighting factory-line inspection with Attention Fusion Reverse Distillation."""

__version__ = "0.1.0"
