"""Helpers for the Art2Mus tests (imported by file name: tests/art2mus is on sys.path under pytest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from melfusion_testing import make_image


def write_image_folder(root: Path, n: int, seed: int = 0) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"art{i:02d}.png"
        make_image(seed + i, (24, 20)).save(path)
        paths.append(path)
    return paths


def write_music_folder(root: Path, n: int, seconds: float = 0.5, nested: bool = True) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    paths = []
    for i in range(n):
        folder = root / f"{i % 2:03d}" if nested else root
        folder.mkdir(exist_ok=True)
        path = folder / f"track{i:02d}.wav"
        wave = 0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * (i + 1) * t))
        sf.write(path, wave.astype(np.float32), 16000)
        paths.append(path)
    return paths


class FakeJointEncoder:
    """An ImageEncoder whose audio embeddings share its image space (like ImageBind), for ranking tests:
    every image embeds to ones(D); a batch's later waveforms are closer to it (see encode_audio)."""

    name = "fake-joint"
    shares_audio_space = True
    cache_id = "fake-joint-0"

    def __init__(self, dim: int = 24) -> None:
        self.embed_dim = dim
        self.audio_calls = 0

    def encode_images(self, images):
        import torch

        return torch.ones(len(images), self.embed_dim)

    def encode_audio(self, waveforms, sample_rate):
        """Waveform i of the batch → ones + (M − i)·v with v ⟂ ones: cosine with the image rises with i."""
        import torch

        self.audio_calls += 1
        m = len(waveforms)
        v = torch.zeros(self.embed_dim)
        v[0], v[1] = 1.0, -1.0
        return torch.stack([torch.ones(self.embed_dim) + (m - i) * v for i in range(m)])
