"""Audio files: load (any soundfile format, mono, soxr resampling) and save (WAV/FLAC, loudness,
peak safety, atomic write, JSON sidecar). Arrays are channels-first: (T,) mono or (C, T)."""

from __future__ import annotations

import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import soundfile as sf
import soxr
import torch

from melfusion.errors import MelfusionInputError
from melfusion.utils.files import atomic_path, atomic_write_text, dumps_json

SAVE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
PEAK_LIMIT = 0.99  # save_audio never writes a sample beyond this
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block (pyloudnorm's default): shorter clips cannot be measured
MAX_CHANNELS = 16


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise MelfusionInputError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000, mono: bool = True) -> np.ndarray:
    """Read any file soundfile understands -> float32 (T,) if mono (channel mean) else (C, T),
    resampled to `sample_rate` with soxr (HQ). Bad files raise MelfusionInputError."""
    path = Path(path)
    sample_rate = _check_rate(sample_rate)
    if not path.is_file():
        what = "is a directory, not an audio file" if path.is_dir() else "does not exist"
        raise MelfusionInputError(f"audio file {path} {what}; check the path")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MelfusionInputError(
            f"cannot read {path} as audio ({reason}); convert it to WAV or FLAC, e.g. "
            f"`ffmpeg -i {path} {path.with_suffix('.wav')}`"
        ) from err
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise MelfusionInputError(f"audio file {path} contains no samples; use a non-empty recording")
    if not np.isfinite(data).all():
        raise MelfusionInputError(f"audio file {path} contains NaN or infinite samples; re-export it")
    if mono and data.shape[1] > 1:
        data = data.mean(axis=1, keepdims=True)  # (T, 1)
    if file_rate != sample_rate:
        data = soxr.resample(data, file_rate, sample_rate, quality="HQ")  # (T', C)
    data = np.ascontiguousarray(data.T, dtype=np.float32)  # (C, T)
    return data[0] if mono else data


def _as_numpy(waveform: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().to("cpu", torch.float64).numpy()
    return np.asarray(waveform, dtype=np.float64)


def _check_waveform(waveform: np.ndarray, what: str = "waveform") -> None:
    if waveform.ndim not in (1, 2) or (waveform.ndim == 2 and not 1 <= waveform.shape[0] <= MAX_CHANNELS):
        raise MelfusionInputError(
            f"{what} must have shape (T,) or (C, T) with 1 <= C <= {MAX_CHANNELS}, got {waveform.shape}; "
            "transpose a (T, C) array"
        )
    if waveform.shape[-1] == 0:
        raise MelfusionInputError(f"{what} is empty (0 samples); nothing to save")
    if not np.isfinite(waveform).all():
        raise MelfusionInputError(f"{what} contains NaN or infinite values; check the model output")


def measure_loudness(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> float | None:
    """Integrated loudness (BS.1770, LUFS) of (T,) or (C, T); None when the clip is shorter than one
    0.4 s block or silent (below the -70 LUFS absolute gate)."""
    x = _as_numpy(waveform)
    if x.shape[-1] < round(LOUDNESS_BLOCK_S * sample_rate) + 1:
        return None
    if x.ndim == 2 and x.shape[0] > 5:  # BS.1770 channel weights (and pyloudnorm) stop at 5.0 layouts
        return None
    meter = pyloudnorm.Meter(sample_rate, block_size=LOUDNESS_BLOCK_S)
    with np.errstate(divide="ignore"):  # silence: log10(0) -> -inf, reported as None
        lufs = meter.integrated_loudness(x.T if x.ndim == 2 else x)  # pyloudnorm wants (T, C)
    return float(lufs) if math.isfinite(lufs) else None


def loudness_normalize(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, target_lufs: float
) -> np.ndarray:
    """Scale to `target_lufs` integrated loudness; float64, same shape. Returned unchanged, with a
    warning, when loudness cannot be measured (shorter than 0.4 s, or silent). May exceed 1.0:
    follow with `peak_normalize(..., reduce_only=True)` before writing."""
    x = _as_numpy(waveform)
    lufs = measure_loudness(x, sample_rate)
    if lufs is None:
        warnings.warn(
            f"loudness normalisation skipped: clip of {x.shape[-1] / sample_rate:.3f} s is shorter than "
            f"{LOUDNESS_BLOCK_S} s or silent",
            stacklevel=2,
        )
        return x
    return x * 10.0 ** ((target_lufs - lufs) / 20.0)


def peak_normalize(
    waveform: np.ndarray | torch.Tensor, target_peak: float = PEAK_LIMIT, *, reduce_only: bool = False
) -> np.ndarray:
    """Scale so max |sample| == target_peak (float64). `reduce_only`: only scale down when above it.
    Silence is returned unchanged."""
    x = _as_numpy(waveform)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0 or (reduce_only and peak <= target_peak):
        return x
    return x * (target_peak / peak)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """`out.wav` -> `out.json`."""
    return Path(path).with_suffix(".json")


def save_audio(
    path: str | os.PathLike[str],
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    loudness_lufs: float | None = None,
    metadata: dict[str, Any] | None = None,
    subtype: str | None = None,
) -> Path:
    """Write (T,) or (C, T) audio to WAV or FLAC (from the suffix), atomically; return the path.

    Optional loudness normalisation to `loudness_lufs`, then peak safety (|sample| <= 0.99, never
    clips). With `metadata`, also writes `<stem>.json`: the metadata plus sample_rate, channels,
    num_samples, duration_s and loudness_lufs (measured on what was written; null if unmeasurable).
    """
    path = Path(path)
    file_format = SAVE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise MelfusionInputError(f"cannot save audio to {path}: use a .wav or .flac file name")
    sample_rate = _check_rate(sample_rate)
    if subtype is not None and not sf.check_format(file_format, subtype):
        raise MelfusionInputError(
            f"subtype {subtype!r} is not valid for {file_format}; choose one of "
            f"{sorted(sf.available_subtypes(file_format))}"
        )
    x = _as_numpy(waveform)
    _check_waveform(x)

    if loudness_lufs is not None:
        x = loudness_normalize(x, sample_rate, loudness_lufs)
    x = peak_normalize(x, PEAK_LIMIT, reduce_only=True)  # (T,) or (C, T)

    sidecar_text = None
    if metadata is not None:
        info = dict(metadata)
        info.update(
            sample_rate=sample_rate,
            channels=1 if x.ndim == 1 else int(x.shape[0]),
            num_samples=int(x.shape[-1]),
            duration_s=x.shape[-1] / sample_rate,
            loudness_lufs=measure_loudness(x, sample_rate),
        )
        try:  # serialise before writing anything, so bad metadata leaves no files behind
            sidecar_text = dumps_json(info)
        except (TypeError, ValueError) as err:
            raise MelfusionInputError(f"metadata for {path} is not JSON-serialisable ({err})") from err

    with atomic_path(path) as tmp:
        sf.write(tmp, x.T.astype(np.float32), sample_rate, subtype=subtype, format=file_format)
    if sidecar_text is not None:
        atomic_write_text(sidecar_path(path), sidecar_text)
    return path
