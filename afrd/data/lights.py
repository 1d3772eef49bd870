"""Names of the six lighting setups. Configs and bundles name lights; nothing assumes an index.

The default order is Eyecandies' file order (``image_0`` .. ``image_5``), so a model trained on
Eyecandies and one trained on our own captures see the lights in the same order.
"""

from __future__ import annotations

RING_ALL = "ring_all"  # all four camera-ring spotlights together
RING_BOTTOM = "ring_bottom"
RING_RIGHT = "ring_right"
RING_TOP = "ring_top"
RING_LEFT = "ring_left"
BOX = "box"  # the four light-box lights together: diffuse, the single-image view

DEFAULT_LIGHTS: tuple[str, ...] = (RING_ALL, RING_BOTTOM, RING_RIGHT, RING_TOP, RING_LEFT, BOX)

# Eyecandies file stem for each light.
EYECANDIES_FILES: dict[str, str] = {name: f"image_{i}" for i, name in enumerate(DEFAULT_LIGHTS)}
