"""Fixtures for the evaluation tests: tiny random embedders and small synthetic audio/image sets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MELFUSION_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: run with MELFUSION_SLOW=1")
    for item in items:
        if "slow" in item.keywords and "tests/evaluation" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


def tone(freq: float, seconds: float, sr: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.15 * np.sin(2 * np.pi * 2.5 * freq * t)
    return (wave + noise * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_embedders() -> dict[str, object]:
    from melfusion.evaluation.embedders import ClapEmbedder, ClipEmbedder, PANNsEmbedder, VGGishEmbedder

    return {
        "vggish": VGGishEmbedder.tiny(),
        "panns": PANNsEmbedder.tiny(),
        "clap": ClapEmbedder.tiny(),
        "clip": ClipEmbedder.tiny(),
    }


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ref/ (6 clips), good/ (same names, close), noisy/ (5 of the names, .flac at 22.05 kHz, plus one
    unmatched), images/, manifest.jsonl with prompts and images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("evalset")
    for d in ("ref", "good", "noisy", "images"):
        (root / d).mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(6):
        f = 180.0 * (1.3**i)
        sf.write(root / "ref" / f"clip{i}.wav", tone(f, 1.2, 16000, 0.01, i), 16000)
        sf.write(root / "good" / f"clip{i}.wav", tone(f * 1.02, 1.2, 16000, 0.02, 10 + i), 16000)
        if i < 5:
            sf.write(root / "noisy" / f"clip{i}.flac", tone(300.0, 1.0, 22050, 0.3, 20 + i), 22050)
        colour = (rng.random(3) * 255).astype(np.uint8)
        img = np.tile(colour, (40, 48, 1)) + (rng.random((40, 48, 3)) * 40).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"clip{i}.png")
        rows.append(
            {"audio": f"clip{i}.wav", "image": f"images/clip{i}.png", "prompt": f"calm piece number {i}"}
        )
    sf.write(root / "noisy" / "extra.wav", tone(500.0, 1.0, 16000, 0.3, 99), 16000)
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {
        "root": root,
        "ref": root / "ref",
        "good": root / "good",
        "noisy": root / "noisy",
        "manifest": root / "manifest.jsonl",
    }
