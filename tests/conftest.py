"""Shared fixtures: tiny components built in code (never from the hub)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_components_factory():
    from melfusion.models.tiny import build_tiny_components

    return build_tiny_components


@pytest.fixture
def tiny_pipe(tiny_components_factory):
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    pipe = MeLFusionPipeline(**tiny_components_factory(audio_seconds=1.28, image_size=32))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "photo.png"
    make_image().save(path)
    return path
