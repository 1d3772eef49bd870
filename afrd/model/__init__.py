"""Models (torch): what every kind shares at this level (teachers, image sets, scoring, map
statistics, held-out splits, metrics, checkpoints, presets, evaluation, ``afrd train``), what
the distillation kinds share in ``distill/``, and one folder per model kind (``afrd/``,
``memory/``, ``cad/``, ``dcam/``), each registered in one line of ``kinds``. Kinds never import
each other; the shared level reaches them only through ``kinds``.
"""
