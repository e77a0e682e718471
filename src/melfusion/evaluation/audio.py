"""Audio file listing and loading for evaluation (mono float32 at the embedder's rate).

Uses `melfusion.audio.io.load_audio` when the project provides it; otherwise soundfile + soxr here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

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


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return np.asarray(wave, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(wave, dtype=np.float32), orig_sr, target_sr, quality="HQ").astype(
        np.float32
    )


def _local_load(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    wave, sr = read_audio_native(path)
    return resample(wave, sr, sample_rate)


def _loader() -> Callable[[str | os.PathLike[str], int], np.ndarray]:
    try:
        from melfusion.audio.io import load_audio as project_load_audio
    except ImportError:
        return _local_load

    def load(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
        try:
            wave = project_load_audio(path, sample_rate, mono=True)
        except MelfusionInputError:
            raise
        except Exception as err:
            raise MelfusionInputError(f"cannot read audio file {path}: {err}") from None
        return np.asarray(wave, dtype=np.float32).reshape(-1)

    return load


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Mono float32 waveform of `path` at `sample_rate`."""
    return _loader()(path, sample_rate)
