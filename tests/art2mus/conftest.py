"""Art2Mus test fixtures: toy AudioLDM 2 components built in code (no network), one CPU thread per test
(the 2-core machine is shared; two threads contend badly with other jobs)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_art2mus():
    """A fresh tiny Art2MusPipeline (CLIP image encoder, 1 image token, 0.64 s of audio)."""
    from melfusion.pipelines.art2mus import Art2MusPipeline, build_tiny_art2mus_components

    pipe = Art2MusPipeline(**build_tiny_art2mus_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe
