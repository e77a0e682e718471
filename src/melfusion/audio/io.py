"""Audio files: load (any soundfile format, mono, soxr resampling) and save (WAV/FLAC, loudness,
peak safety, atomic write, JSON sidecar). Arrays are channels-first: (T,) mono or (C, T)."""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import soundfile as sf
import soxr
import torch

from melfusion.errors import MelfusionInputError
from melfusion.utils.files import atomic_pair, atomic_path, dumps_json, recover_pairs, sha256_file

SAVE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "OGG"}  # MP3 / Ogg Vorbis: libsndfile
PEAK_LIMIT = 0.99  # save_audio never writes a sample beyond this
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block (pyloudnorm's default): shorter clips cannot be measured
MAX_CHANNELS = 16
LOUDNESS_RANGE = (-70.0, 0.0)  # LUFS targets save_audio accepts (-70: BS.1770's absolute gate)
MAX_SIDECAR_BYTES = 1 << 20  # a larger .json next to an audio file is not one of our sidecars


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


def check_loudness_target(lufs: float | None, what: str = "loudness target") -> float | None:
    """None, or a finite LUFS value within LOUDNESS_RANGE (else MelfusionInputError)."""
    if lufs is None:
        return None
    lo, hi = LOUDNESS_RANGE
    if isinstance(lufs, bool) or not isinstance(lufs, numbers.Real) or not (lo <= lufs <= hi):
        raise MelfusionInputError(
            f"{what} must be a LUFS value in [{lo:g}, {hi:g}] (e.g. -14 for streaming, -23 for broadcast), "
            f"got {lufs!r}"
        )
    return float(lufs)


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in the sidecar of audio file `path`; None when there is none, or it is not a small
    regular file holding a JSON object (a FIFO or a huge file is never opened)."""
    side = sidecar_path(path)
    try:
        st = side.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR_BYTES:
        return None
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def sidecar_matches_audio(path: str | os.PathLike[str], info: dict[str, Any]) -> bool:
    """Whether sidecar `info` describes the audio file `path` as it is now: it names that file (if it
    records a name) and the file's SHA-256 is the recorded one (sidecars from before the hash: name only)."""
    path = Path(path)
    if info.get("audio_file", path.name) != path.name:
        return False
    digest = info.get("audio_sha256")
    if digest is None:
        return path.is_file()
    try:
        return path.is_file() and sha256_file(path) == digest
    except OSError:
        return False


def _verify_sidecar_temporary(second_tmp: Path, second: Path) -> bool:
    """Roll-forward check for a cut-off pair commit: the pending sidecar's hash matches the audio."""
    try:
        info = json.loads(second_tmp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(info, dict) or not isinstance(info.get("audio_file"), str):
        return False
    audio = second.parent / info["audio_file"]
    return sidecar_path(audio) == second and "audio_sha256" in info and sidecar_matches_audio(audio, info)


def recover_audio_pairs(folder: str | os.PathLike[str]) -> int:
    """Complete or discard the audio + sidecar commits a killed `save_audio` left in `folder`; returns the
    number of temporaries handled (see `melfusion.utils.files.atomic_pair`)."""
    return recover_pairs(folder, _verify_sidecar_temporary)


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
    audio_samples (the length), duration_s, loudness_lufs (measured on what was written; null if
    unmeasurable), loudness_target_lufs (the asked target; a warning says when the peak limit kept the
    clip more than 1 LU under it),
    audio_file (the audio's name) and audio_sha256 (its hash). Audio and sidecar are committed as a pair
    (`melfusion.utils.files.atomic_pair`): a crash leaves both old or, after `recover_audio_pairs`, both
    new.
    """
    path = Path(path)
    file_format = SAVE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise MelfusionInputError(f"cannot save audio to {path}: use a .wav, .flac, .mp3 or .ogg file name")
    sample_rate = _check_rate(sample_rate)
    if subtype is not None and not sf.check_format(file_format, subtype):
        raise MelfusionInputError(
            f"subtype {subtype!r} is not valid for {file_format}; choose one of "
            f"{sorted(sf.available_subtypes(file_format))}"
        )
    loudness_lufs = check_loudness_target(loudness_lufs, "loudness_lufs")
    x = _as_numpy(waveform)
    _check_waveform(x)

    if loudness_lufs is not None:
        x = loudness_normalize(x, sample_rate, loudness_lufs)
    x = peak_normalize(x, PEAK_LIMIT, reduce_only=True)  # (T,) or (C, T)
    _check_waveform(x, "the normalised waveform")
    measured = measure_loudness(x, sample_rate) if (metadata is not None or loudness_lufs is not None) else None
    if loudness_lufs is not None and measured is not None and measured < loudness_lufs - 1.0:
        warnings.warn(
            f"{path.name}: {measured:.1f} LUFS instead of the asked {loudness_lufs:g}: reaching it would clip, "
            f"so the peak limit ({PEAK_LIMIT}) kept the clip quieter",
            stacklevel=2,
        )

    info = None
    if metadata is not None:
        info = dict(metadata)
        info.update(
            sample_rate=sample_rate,
            channels=1 if x.ndim == 1 else int(x.shape[0]),
            audio_samples=int(x.shape[-1]),
            duration_s=x.shape[-1] / sample_rate,
            loudness_lufs=measured,
            loudness_target_lufs=loudness_lufs,
            audio_file=path.name,
            audio_sha256="0" * 64,
        )
        try:  # serialise before writing anything, so bad metadata leaves no files behind
            dumps_json(info)
        except (TypeError, ValueError) as err:
            raise MelfusionInputError(f"metadata for {path} is not JSON-serialisable ({err})") from err

    if info is None:
        with atomic_path(path) as tmp:
            sf.write(tmp, x.T.astype(np.float32), sample_rate, subtype=subtype, format=file_format)
        return path
    with atomic_pair(path, sidecar_path(path), _verify_sidecar_temporary) as (tmp, write_sidecar):
        sf.write(tmp, x.T.astype(np.float32), sample_rate, subtype=subtype, format=file_format)
        info["audio_sha256"] = sha256_file(tmp)
        write_sidecar(dumps_json(info).encode("utf-8"))
    return path
