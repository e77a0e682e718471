"""Vocoders: Griffin-Lim quality/determinism/serialisation, HiFi-GAN configs, `vocode`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SpeechT5HifiGan

from melfusion.audio import MelConfig, mel_spectrogram
from melfusion.models.vocoder import (
    GriffinLimVocoder,
    audioldm_s_hifigan_config,
    tiny_hifigan_config,
    vocode,
    vocoder_hop_length,
    vocoder_sample_rate,
)

SR = 16000


@pytest.fixture(autouse=True)
def _single_thread():
    # Griffin-Lim is a loop of small ops: with 2 intra-op threads on a busy 2-core machine each op
    # waits for a descheduled worker (10-60x slower, measured). One thread is as fast when idle.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _signal(kind: str, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    if kind == "sine":
        x = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    else:  # linear chirp 200 Hz -> 2 kHz
        x = 0.5 * torch.sin(2 * torch.pi * (200 * t + 900 * t**2))
    return x.float()[None]  # (1, T)


def _mel_sc(reference: torch.Tensor, estimate: torch.Tensor, cfg: MelConfig) -> float:
    """Spectral convergence ||S - S^||_F / ||S||_F on linear mel magnitudes."""
    s, s_hat = mel_spectrogram(reference, cfg).exp(), mel_spectrogram(estimate, cfg).exp()
    return (torch.linalg.norm(s - s_hat) / torch.linalg.norm(s)).item()


# Measured at n_iter=32 (seed-fixed phase): sine 0.122 / 0.122, chirp 0.075 / 0.067 (center True / False).
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize(("kind", "bound"), [("sine", 0.2), ("chirp", 0.15)])
def test_griffin_lim_reconstructs_from_mel(kind, bound, center):
    cfg = MelConfig(center=center)
    x = _signal(kind)
    mel = mel_spectrogram(x, cfg)  # (1, 100, 64)
    vocoder = GriffinLimVocoder.from_mel_config(cfg)
    y = vocoder(mel)
    assert y.shape == (1, 100 * 160) and y.dtype == torch.float32
    sc = _mel_sc(x, y, cfg)
    assert sc < bound
    no_iterations = GriffinLimVocoder.from_mel_config(cfg, n_iter=0)(mel)  # random phase only
    assert sc < 0.5 * _mel_sc(x, no_iterations, cfg)


def test_griffin_lim_deterministic_and_leaves_global_rng_alone():
    mel = mel_spectrogram(_signal("chirp", 0.5))
    vocoder = GriffinLimVocoder(n_iter=8)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = vocoder(mel)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    assert torch.equal(vocoder(mel), a)


def test_griffin_lim_call_convention_like_speecht5_hifigan():
    vocoder = GriffinLimVocoder(n_iter=4)
    mel = mel_spectrogram(torch.randn(2, 3200) * 0.1)  # (2, 20, 64)
    batched = vocoder(mel)
    assert batched.shape == (2, 3200)
    assert vocoder(mel[:, None]).shape == (2, 3200)  # (B, 1, F, M)
    torch.testing.assert_close(vocoder(mel[1]), batched[1])  # unbatched (F, M) -> (T,)
    assert vocoder(mel[:, :0]).shape == (2, 0)
    with pytest.raises(ValueError, match="log-mel"):
        vocoder(torch.zeros(1, 20, 80))


def test_griffin_lim_save_load_round_trip(tmp_path):
    vocoder = GriffinLimVocoder(n_iter=8, momentum=0.9, nnls_iter=10)
    mel = mel_spectrogram(_signal("sine", 0.5))
    vocoder.save_pretrained(tmp_path)
    loaded = GriffinLimVocoder.from_pretrained(tmp_path)
    assert loaded.config.n_iter == 8 and loaded.config.momentum == 0.9 and loaded.config.nnls_iter == 10
    assert torch.equal(loaded(mel), vocoder(mel))
    half = GriffinLimVocoder.from_pretrained(tmp_path, torch_dtype=torch.float16)
    assert half.mel_basis.dtype == torch.float16  # GL still runs in float32 from the config
    torch.testing.assert_close(half(mel), vocoder(mel), atol=1e-4, rtol=0)


def test_hifigan_configs():
    cfg = audioldm_s_hifigan_config()
    assert cfg.model_in_dim == 64 and cfg.sampling_rate == 16000 and cfg.upsample_initial_channel == 1024
    assert list(cfg.upsample_rates) == [5, 4, 2, 2, 2] and list(cfg.upsample_kernel_sizes) == [
        16,
        16,
        8,
        4,
        4,
    ]
    assert [list(d) for d in cfg.resblock_dilation_sizes] == [[1, 3, 5]] * 3 and cfg.normalize_before is False
    tiny = tiny_hifigan_config(n_mels=32)
    assert tiny.model_in_dim == 32 and int(np.prod(tiny.upsample_rates)) == 160


def test_vocode_with_both_vocoders():
    torch.manual_seed(0)
    hifigan = SpeechT5HifiGan(tiny_hifigan_config()).eval()
    gl = GriffinLimVocoder(n_iter=4)
    mel = mel_spectrogram(torch.randn(2, 4800) * 0.1)  # (2, 30, 64)
    for vocoder in (hifigan, gl):
        assert vocoder_hop_length(vocoder) == 160 and vocoder_sample_rate(vocoder) == SR
        for inp in (mel, mel[:, None]):  # (B, F, M) and (B, 1, F, M)
            wav = vocode(vocoder, inp)
            assert wav.shape == (2, 30 * 160) and wav.dtype == torch.float32
            assert torch.isfinite(wav).all()
    with pytest.raises(ValueError, match="vocode expects"):
        vocode(gl, mel[0])
