"""Art2Mus's KL-Div: a KL between normalised dB spectra of a ground-truth and a generated clip.

As in Art2Mus's `compute_kl_div` (justivanr/art2mus_, `train_test_utils.py`), for each clip at its own
sample rate:

    S  = |STFT(y; n_fft=2048, hop=512, Hann, centred, zero padding)|²     (freq, time)
    D  = librosa.amplitude_to_db(S, ref=np.max)   (so 20·log10 of the power: amin 1e-5, top_db 80)
    p  = Σ_time D  /  Σ D                                           (one value per frequency bin)
    KL = scipy.stats.entropy(p_ref, p_gen) = Σ p_ref log(p_ref / p_gen)

Reimplemented in numpy (no librosa at run time); tests check it against librosa when it is installed.
The clips must have the same STFT size (same n_fft), not the same length.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

SPEC_N_FFT = 2048
SPEC_HOP = 512


def power_spectrogram(y: np.ndarray, n_fft: int = SPEC_N_FFT, hop_length: int = SPEC_HOP) -> np.ndarray:
    """|STFT|² like librosa.stft(center=True, pad_mode='constant', window='hann') → (n_fft//2+1, T)."""
    x = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty mono waveform, got shape {x.shape}")
    x = np.pad(x, n_fft // 2, mode="constant")
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    n_frames = 1 + (x.size - n_fft) // hop_length
    idx = np.arange(n_fft)[None, :] + hop_length * np.arange(n_frames)[:, None]  # (T, n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    spec = np.fft.rfft(x[idx] * window, n=n_fft, axis=1)  # (T, F)
    return (np.abs(spec) ** 2).T  # (F, T)


def amplitude_to_db_refmax(s: np.ndarray, amin: float = 1e-5, top_db: float = 80.0) -> np.ndarray:
    """librosa.amplitude_to_db(s, ref=np.max): 10·log10(max(amin², s²)) − 10·log10(max(amin², max|s|²))."""
    mag = np.abs(np.asarray(s, dtype=np.float64))
    power = mag**2
    ref = np.max(mag) ** 2
    db = 10.0 * np.log10(np.maximum(amin**2, power)) - 10.0 * np.log10(max(amin**2, ref))
    return np.maximum(db, db.max() - top_db)


def spectral_distribution(y: np.ndarray, n_fft: int = SPEC_N_FFT, hop_length: int = SPEC_HOP) -> np.ndarray:
    """Art2Mus's per-frequency-bin distribution of a clip: dB spectrum summed over time, normalised."""
    db = amplitude_to_db_refmax(power_spectrogram(y, n_fft, hop_length))  # (F, T)
    p = db.sum(axis=1)  # (F,)
    total = p.sum()
    if total == 0 or not np.isfinite(total):
        raise ValueError("spectral KL: the clip's dB spectrum sums to zero (silent or constant clip?)")
    return p / total


def spectral_kl(
    reference: np.ndarray, generated: np.ndarray, n_fft: int = SPEC_N_FFT, hop_length: int = SPEC_HOP
) -> float:
    """KL(p_reference ‖ p_generated) of Art2Mus's spectral distributions of two mono waveforms."""
    p = spectral_distribution(reference, n_fft, hop_length)
    q = spectral_distribution(generated, n_fft, hop_length)
    return float(scipy.stats.entropy(p, q))
