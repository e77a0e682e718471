"""Audio stack: mel spectrograms (AudioLDM / TANGO convention) and audio file I/O."""

from melfusion.audio.io import (
    load_audio,
    loudness_normalize,
    measure_loudness,
    peak_normalize,
    save_audio,
    sidecar_path,
)
from melfusion.audio.mel import MelConfig, mel_basis, mel_spectrogram, pad_or_crop

__all__ = [
    "MelConfig",
    "load_audio",
    "loudness_normalize",
    "measure_loudness",
    "mel_basis",
    "mel_spectrogram",
    "pad_or_crop",
    "peak_normalize",
    "save_audio",
    "sidecar_path",
]
