"""Mel transform: AudioLDM / TANGO TacotronSTFT convention, shapes, pad/crop."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch

from melfusion.audio import MelConfig, mel_basis, mel_spectrogram, pad_or_crop
from melfusion.audio.mel import LOG_CLAMP, istft, pad_frames_to_multiple, stft

SR = 16000


def _sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return (amp * torch.sin(2 * torch.pi * freq * t)).float()


def test_config_defaults_and_frames():
    cfg = MelConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels) == (
        16000,
        1024,
        1024,
        160,
        64,
    )
    assert cfg.num_frames(1.0) == 100
    assert cfg.num_frames(10.24) == 1024
    assert cfg.num_samples(1024) == 163840
    assert MelConfig.from_dict({**cfg.to_dict(), "n_iter": 32}) == cfg  # unknown keys ignored
    with pytest.raises(ValueError, match="fmax"):
        MelConfig(fmax=9000.0)


def test_mel_basis_matches_librosa_slaney():
    basis = mel_basis(MelConfig())
    assert basis.shape == (64, 513) and basis.dtype == torch.float32
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0, htk=False, norm="slaney")
    np.testing.assert_allclose(basis.numpy(), ref, rtol=0, atol=1e-7)


def test_shape_1s_is_100_frames_and_batch():
    x = torch.randn(3, SR) * 0.1
    mel = mel_spectrogram(x)
    assert mel.shape == (3, 100, 64) and mel.dtype == torch.float32
    assert mel_spectrogram(x[0]).shape == (1, 100, 64)  # (T,) counts as a batch of one
    assert mel_spectrogram(x[:, :16159]).shape == (3, 100, 64)  # frames = T // hop
    assert torch.allclose(mel_spectrogram(x[1]), mel[1:2], atol=1e-5)
    assert mel_spectrogram(torch.zeros(SR)).min() == pytest.approx(np.log(1e-5))  # log(clamp 1e-5)


@pytest.mark.parametrize("center", [True, False])
def test_matches_reference_tacotron_stft(center):
    # TacotronSTFT: reflect-pad n_fft/2, |STFT| with periodic hann, slaney mel, log(clamp(1e-5)).
    # center=False: HiFi-GAN framing, reflect-pad (n_fft - hop) / 2.
    cfg = MelConfig(center=center)
    x = (np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32)
    pad = 512 if center else 432
    spec = np.abs(librosa.stft(np.pad(x, pad, mode="reflect"), n_fft=1024, hop_length=160, center=False))
    ref = np.log(np.maximum(librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmax=8000.0) @ spec, 1e-5)).T
    ours = mel_spectrogram(torch.from_numpy(x), cfg)[0].numpy()
    np.testing.assert_allclose(ours, ref[:50], atol=1e-4)


@pytest.mark.parametrize("freq", [440.0, 2000.0])
def test_sine_peaks_in_the_right_mel_bin(freq):
    mel = mel_spectrogram(_sine(freq))[0]  # (F, 64)
    centres = librosa.mel_frequencies(n_mels=64 + 2, fmin=0.0, fmax=8000.0)[1:-1]  # filter peaks
    expected = int(np.argmin(np.abs(centres - freq)))
    got = mel[10:-10].mean(0).argmax().item()
    assert abs(got - expected) <= 1


@pytest.mark.parametrize("center", [True, False])
def test_stft_istft_round_trip(center):
    cfg = MelConfig(center=center)
    x = torch.randn(2, 4000) * 0.1
    spec = stft(x, cfg)
    assert spec.shape == (2, 513, 25)
    torch.testing.assert_close(istft(spec, cfg), x, atol=1e-5, rtol=0)


def test_pad_or_crop_numpy_and_torch():
    a = np.arange(10, dtype=np.float32)
    assert pad_or_crop(a, 4).tolist() == [0, 1, 2, 3]
    assert pad_or_crop(a, 12).tolist() == list(range(10)) + [0, 0]
    c1 = pad_or_crop(a, 4, random_crop=True, generator=np.random.default_rng(3))
    c2 = pad_or_crop(a, 4, random_crop=True, generator=np.random.default_rng(3))
    assert c1.tolist() == c2.tolist() and np.all(np.diff(c1) == 1)
    t = torch.arange(20.0).reshape(2, 10)
    assert pad_or_crop(t, 15).shape == (2, 15) and isinstance(pad_or_crop(t, 15), torch.Tensor)
    g = torch.Generator().manual_seed(0)
    crop = pad_or_crop(t, 5, random_crop=True, generator=g)
    assert crop.shape == (2, 5) and torch.equal(crop[1] - crop[0], torch.full((5,), 10.0))
    with pytest.raises(TypeError):
        pad_or_crop(t, 5, random_crop=True, generator=np.random.default_rng(0))


def test_pad_frames_to_multiple_pads_with_the_log_floor_and_keeps_the_mel():
    mel = torch.randn(2, 501, 64)
    padded = pad_frames_to_multiple(mel, 4)
    assert padded.shape == (2, 504, 64)
    assert torch.equal(padded[:, :501], mel)
    assert torch.allclose(padded[:, 501:], torch.full((2, 3, 64), math.log(LOG_CLAMP)))
    assert pad_frames_to_multiple(mel[:, :500], 4).shape == (2, 500, 64)  # already a multiple: unchanged
    with pytest.raises(ValueError, match="multiple"):
        pad_frames_to_multiple(mel, 0)
