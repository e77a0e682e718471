"""Helpers shared by tests (importable because pyproject sets pytest pythonpath = tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def make_image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr)
