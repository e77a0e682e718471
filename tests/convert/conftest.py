"""Checkpoint folders in the original TANGO / diffusers Stable Diffusion layouts, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._convert_helpers import write_sd_folder, write_t5_folder, write_tango_folder


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory) -> Path:
    return write_t5_folder(tmp_path_factory.mktemp("flan-t5-tiny"), seed=1)


@pytest.fixture(scope="session")
def tango(tmp_path_factory):
    """(folder, (reference vae, stft, AudioDiffusion)) for a tiny TANGO checkpoint."""
    path = tmp_path_factory.mktemp("tango") / "tango-full-ft-audio-music-caps"
    return path, write_tango_folder(path, seed=0)


@pytest.fixture(scope="session")
def loaded_tango(tango, t5_dir):
    from melfusion.convert.tango import load_tango_music_components

    return load_tango_music_components(tango[0], text_encoder=t5_dir)


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory):
    """(folder, components it was saved from) for a tiny SD-1.5-style folder (PNDM scheduler)."""
    path = tmp_path_factory.mktemp("sd") / "stable-diffusion-tiny"
    return path, write_sd_folder(path, seed=0, scheduler="pndm")
