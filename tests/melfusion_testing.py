"""Helpers shared by tests (importable because pyproject sets pytest pythonpath = tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def make_image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr)


def write_triplets(root, n: int = 4, seconds: float = 1.5, sample_rate: int = 16000, seed: int = 0):
    """n ⟨image, text, audio⟩ triplets (sine chords, random-colour PNGs) and a JSONL manifest; returns its path."""
    import json

    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rows = []
    for i in range(n):
        freq = 220.0 * 2 ** (i / 4)
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2 * freq * t)
        wave += 0.01 * rng.standard_normal(t.shape)
        sf.write(root / f"clip{i}.wav", wave.astype(np.float32), sample_rate)
        make_image(seed + i, (40, 40)).save(root / f"img{i}.png")
        rows.append(
            {
                "id": f"item{i}",
                "image": f"img{i}.png",
                "audio": f"clip{i}.wav",
                "text": f"a {['calm', 'fast', 'sad', 'happy'][i % 4]} tune number {i}",
            }
        )
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
