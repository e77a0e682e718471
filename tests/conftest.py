"""Shared fixtures: tiny components built in code (never from the hub)."""

from __future__ import annotations

import os

import pytest
import torch
from melfusion_testing import make_image

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


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "photo.png"
    make_image().save(path)
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_components_factory):
    """A saved tiny MeLFusionPipeline folder (α = 0.1) for command tests."""
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    path = tmp_path_factory.mktemp("models") / "tiny"
    pipe = MeLFusionPipeline(**tiny_components_factory(audio_seconds=0.64, image_size=16))
    pipe.synapse.set_alphas(0.1)
    pipe.save_pretrained(path)
    return path
