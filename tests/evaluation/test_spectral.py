from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from melfusion.evaluation.metrics import spectral_distribution, spectral_kl
from melfusion.evaluation.metrics.spectral import power_spectrogram


def _clip(seed: int, n: int = 20000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.4 * np.sin(2 * np.pi * (200 + 100 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(
        np.float32
    )


def test_identical_clips_give_zero() -> None:
    x = _clip(0)
    assert spectral_kl(x, x.copy()) == pytest.approx(0.0, abs=1e-12)
    assert spectral_kl(x, _clip(3)) > 0


def test_matches_art2mus_librosa_formula() -> None:
    librosa = pytest.importorskip("librosa")
    a, b = _clip(1), _clip(2, n=17000)  # different lengths are fine

    def art2mus(y: np.ndarray) -> np.ndarray:  # Art2Mus compute_kl_div, step by step
        stft = np.abs(librosa.stft(y.astype(np.float64), n_fft=2048, hop_length=512)) ** 2
        db = librosa.amplitude_to_db(stft, ref=np.max)
        p = np.sum(db, axis=1)
        return p / np.sum(p)

    np.testing.assert_allclose(
        power_spectrogram(a), np.abs(librosa.stft(a.astype(np.float64))) ** 2, rtol=1e-6
    )
    np.testing.assert_allclose(spectral_distribution(a), art2mus(a), rtol=1e-9)
    expected = scipy.stats.entropy(art2mus(a), art2mus(b))
    assert spectral_kl(a, b) == pytest.approx(expected, rel=1e-7)


def test_silence_is_an_error() -> None:
    with pytest.raises(ValueError, match="sums to zero"):
        spectral_kl(np.zeros(4096), _clip(0))
