"""Shared pytest setup: keep torch to the cores CI has and make runs repeatable."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
