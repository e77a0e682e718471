"""Tiny triplet folders for the data tests: sine WAVs, small PNGs and deliberately bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image


def write_sine(
    path: Path,
    seconds: float = 2.0,
    rate: int = 16000,
    freq: float = 440.0,
    amp: float = 0.5,
    channels: int = 1,
) -> Path:
    t = np.arange(round(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate)
    return path


def write_ramp(path: Path, n: int, rate: int = 16000) -> Path:
    """Samples k / n (distinct values, so crops can be located)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (np.arange(n) / n).astype(np.float32), rate, subtype="FLOAT")
    return path


def write_png(
    path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (20, 16)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_corrupt_png(path: Path) -> Path:
    """A real PNG header followed by truncated data: opens, then fails to decode."""
    good = write_png(path.with_name("_full_" + path.name), size=(64, 64))
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(good)
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    good.unlink()
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_folder(root: Path) -> Path:
    """A manifest with 3 good items and one of every kind of problem; returns the manifest path."""
    write_sine(root / "wav" / "good1.wav", 2.0)
    write_sine(root / "wav" / "good2.wav", 2.0, rate=22050, channels=2)
    write_sine(root / "wav" / "good3.wav", 1.5)
    write_png(root / "img" / "a.png")
    write_png(root / "img" / "b.png", (10, 200, 10))
    write_sine(root / "wav" / "silent.wav", 2.0, amp=0.0)
    write_sine(root / "wav" / "short.wav", 0.25)
    (root / "wav" / "empty.wav").write_bytes(b"")
    (root / "wav" / "text.wav").write_text("this is not audio\n" * 20)
    write_corrupt_png(root / "img" / "corrupt.png")
    rows = [
        {"id": "good1", "image": "img/a.png", "text": "calm piano", "audio": "wav/good1.wav"},
        {"id": "good2", "image": ["img/a.png", "img/b.png"], "text": "stereo", "audio": "wav/good2.wav"},
        {
            "id": "good3",
            "image": ["img/b.png", "img/corrupt.png"],
            "text": "one bad image",
            "audio": "wav/good3.wav",
        },
        {"id": "missing_audio", "image": "img/a.png", "text": "x", "audio": "wav/nope.wav"},
        {"id": "missing_image", "image": "img/nope.png", "text": "x", "audio": "wav/good1.wav"},
        {"id": "empty", "image": "img/a.png", "text": "x", "audio": "wav/empty.wav"},
        {"id": "text_as_wav", "image": "img/a.png", "text": "x", "audio": "wav/text.wav"},
        {"id": "silent", "image": "img/a.png", "text": "x", "audio": "wav/silent.wav"},
        {"id": "short", "image": "img/a.png", "text": "x", "audio": "wav/short.wav"},
        {"id": "corrupt_image", "image": "img/corrupt.png", "text": "x", "audio": "wav/good1.wav"},
        {"id": "no_text", "image": "img/a.png", "audio": "wav/good1.wav"},
    ]
    return write_jsonl(root / "train.jsonl", rows)
