"""Audio file listing and loading for evaluation (mono float32 at the embedder's rate, through
`melfusion.audio.io.load_audio`; its native rate for the spectral KL)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from melfusion.audio import io as audio_io
from melfusion.errors import MelfusionInputError

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"})


def list_audio_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Audio files directly inside `folder` (not recursive), sorted by name; hidden files skipped."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise MelfusionInputError(f"{d} is not a folder of audio files")
    files = sorted(
        p
        for p in d.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS
    )
    if not files:
        exts = ", ".join(sorted(AUDIO_EXTENSIONS))
        raise MelfusionInputError(f"{d} holds no audio files ({exts})")
    return files


def read_audio_native(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, its own sample rate)."""
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (L, C)
    except Exception as err:  # soundfile raises several types for unreadable files
        raise MelfusionInputError(f"cannot read audio file {path}: {err}") from None
    if data.shape[0] == 0:
        raise MelfusionInputError(f"audio file {path} is empty")
    return data.mean(axis=1), int(sr)


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Mono float32 waveform (T,) of `path` at `sample_rate` (unreadable files: MelfusionInputError)."""
    return audio_io.load_audio(path, sample_rate, mono=True)
