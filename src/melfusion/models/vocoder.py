"""Vocoders: log-mel (AudioLDM / TANGO convention) -> waveform.

- `GriffinLimVocoder`: weight-free fast Griffin-Lim, a diffusers model so a pipeline saves and loads
  it like any component. Called like transformers' `SpeechT5HifiGan`:
  (B, frames, n_mels) -> (B, samples), or (frames, n_mels) -> (samples,).
- `audioldm_s_hifigan_config()`: the AudioLDM-S HiFi-GAN as a `SpeechT5HifiGan` config
  (the values of diffusers' `scripts/convert_original_audioldm_to_diffusers.py`).
- `vocode()`: one entry point for either vocoder; always returns (B, frames * hop) float32.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from melfusion.audio.mel import MelConfig, fix_frames, istft, mel_basis, stft

_PHASE_SEED = 1234  # fixed initial phase: same input -> same waveform, global RNG untouched


class GriffinLimVocoder(ModelMixin, ConfigMixin):
    """Log-mel -> waveform with fast Griffin-Lim (Perraudin, Balazs & Sondergaard, 2013).

    Steps: exp (undo the log compression) -> linear magnitude: mel basis pseudo-inverse clamped
    >= 0, refined by `nnls_iter` multiplicative non-negative least-squares updates -> `n_iter` fast
    Griffin-Lim iterations with `momentum`, framed exactly as `melfusion.audio.mel_spectrogram`
    -> (B, frames * hop_length). Deterministic: the initial phase comes from a private,
    fixed-seed generator. Nothing is learned; the saved "weights" are the mel basis itself.
    """

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        center: bool = True,
        n_iter: int = 32,
        momentum: float = 0.99,
        nnls_iter: int = 50,
    ):
        super().__init__()
        if n_iter < 0 or nnls_iter < 0:
            raise ValueError(f"n_iter and nnls_iter must be >= 0, got {n_iter}, {nnls_iter}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.mel_config = MelConfig(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
            center=center,
        )
        basis = mel_basis(self.mel_config)  # (n_mels, n_freqs)
        # Saved, so save_pretrained writes a weights file and from_pretrained finds one.
        self.register_buffer("mel_basis", basis)
        inverse = torch.linalg.pinv(basis.double()).float()  # (n_freqs, n_mels)
        self.register_buffer("inverse_mel_basis", inverse, persistent=False)

    @classmethod
    def from_mel_config(cls, config: MelConfig, **kwargs) -> GriffinLimVocoder:
        return cls(**config.to_dict(), **kwargs)

    @property
    def sampling_rate(self) -> int:
        return self.config.sample_rate

    def mel_to_linear(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, F, n_mels) log-mel -> (B, n_freqs, F) non-negative linear magnitude S, M S ~ mel."""
        basis, inverse = self.mel_basis, self.inverse_mel_basis  # M (n_mels, n_freqs), M+ (n_freqs, n_mels)
        if basis.dtype != torch.float32:  # loaded/cast to half: rebuild in float32, GL needs the precision
            basis = mel_basis(self.mel_config).to(basis.device)
            inverse = torch.linalg.pinv(basis.double()).float()
        mel = torch.exp(log_mel.float()).transpose(1, 2)  # (B, n_mels, F)
        magnitude = torch.matmul(inverse, mel)  # (B, n_freqs, F)
        if self.config.nnls_iter == 0:
            return magnitude.clamp_min(0.0)
        # Lee-Seung multiplicative updates for min ||M S - mel||^2, S >= 0: S <- S * M^T mel / M^T M S
        magnitude = magnitude.clamp_min(1e-8)
        numerator = torch.matmul(basis.T, mel)  # (B, n_freqs, F)
        for _ in range(self.config.nnls_iter):
            denominator = torch.matmul(basis.T, torch.matmul(basis, magnitude))
            magnitude = magnitude * numerator / denominator.clamp_min(1e-12)
        return magnitude

    @torch.no_grad()
    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """(B, F, n_mels), (B, 1, F, n_mels) or (F, n_mels) log-mel -> (B, F * hop) or (F * hop,) float32."""
        is_batched = spectrogram.dim() != 2
        if spectrogram.dim() == 4 and spectrogram.shape[1] == 1:
            spectrogram = spectrogram.squeeze(1)
        elif spectrogram.dim() == 2:
            spectrogram = spectrogram.unsqueeze(0)
        if spectrogram.dim() != 3 or spectrogram.shape[-1] != self.config.n_mels:
            raise ValueError(
                f"GriffinLimVocoder expects (B, frames, {self.config.n_mels}) log-mel, got {tuple(spectrogram.shape)}"
            )
        if spectrogram.shape[1] == 0:
            waveform = spectrogram.new_zeros(spectrogram.shape[0], 0, dtype=torch.float32)
            return waveform if is_batched else waveform[0]
        magnitude = self.mel_to_linear(spectrogram)  # (B, n_freqs, F)
        waveform = self.griffin_lim(magnitude)  # (B, F * hop)
        return waveform if is_batched else waveform[0]

    def griffin_lim(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Fast Griffin-Lim. (B, n_freqs, F) linear magnitude -> (B, F * hop) waveform.

        Perraudin et al.: t_n = P_C1(P_C2(c_{n-1})), c_n = t_n + a (t_n - t_{n-1}), P_C2 = STFT(ISTFT(.)),
        P_C1 = keep the phase, impose `magnitude`. Written in librosa's equivalent form
        angles <- normalise(rebuilt - a / (1 + a) * rebuilt_prev).
        """
        cfg = self.mel_config
        # One (n_freqs, F) phase shared by the batch: an item's output does not depend on its batch.
        gen = torch.Generator(device="cpu").manual_seed(_PHASE_SEED)
        phase = torch.rand(magnitude.shape[1:], generator=gen, dtype=torch.float32) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(phase), phase).to(magnitude.device)  # (n_freqs, F)
        angles = angles.expand_as(magnitude)  # (B, n_freqs, F)
        alpha = self.config.momentum / (1.0 + self.config.momentum)
        rebuilt_prev = torch.zeros_like(angles)
        for _ in range(self.config.n_iter):
            rebuilt = stft(istft(magnitude * angles, cfg), cfg)  # project onto consistent spectrograms
            angles = rebuilt - alpha * rebuilt_prev
            angles = angles / (angles.abs() + 1e-16)  # keep the phase only
            rebuilt_prev = rebuilt
        return istft(magnitude * angles, cfg)  # (B, F * hop)


def audioldm_s_hifigan_config() -> SpeechT5HifiGanConfig:
    """AudioLDM-S (and TANGO) HiFi-GAN: 64 mels at 16 kHz, 5*4*2*2*2 = 160x upsampling."""
    return SpeechT5HifiGanConfig(
        model_in_dim=64,
        sampling_rate=16000,
        upsample_initial_channel=1024,
        upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        normalize_before=False,
    )


def tiny_hifigan_config(n_mels: int = 64) -> SpeechT5HifiGanConfig:
    """A few-thousand-parameter HiFi-GAN with AudioLDM-S's upsampling (hop 160), for tests."""
    return SpeechT5HifiGanConfig(
        model_in_dim=n_mels,
        sampling_rate=16000,
        upsample_initial_channel=32,  # channels 32 -> 16, 8, 4, 2, 1 over the 5 upsamplers
        upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    )


Vocoder = GriffinLimVocoder | SpeechT5HifiGan


def vocoder_hop_length(vocoder: Vocoder) -> int:
    """Waveform samples per mel frame."""
    if isinstance(vocoder, GriffinLimVocoder):
        return int(vocoder.config.hop_length)
    return math.prod(vocoder.config.upsample_rates)


def vocoder_sample_rate(vocoder: Vocoder) -> int:
    if isinstance(vocoder, GriffinLimVocoder):
        return int(vocoder.config.sample_rate)
    return int(vocoder.config.sampling_rate)


@torch.no_grad()
def vocode(vocoder: Vocoder, log_mel: torch.Tensor) -> torch.Tensor:
    """Log-mel (B, 1, F, M) or (B, F, M) -> waveform (B, F * hop) float32, for either vocoder type.

    HiFi-GAN's transposed convolutions overshoot by a few samples; the output is cut (or padded)
    to exactly F * hop so mel frames and samples stay aligned.
    """
    if log_mel.dim() == 4 and log_mel.shape[1] == 1:
        log_mel = log_mel.squeeze(1)  # (B, F, M)
    if log_mel.dim() != 3:
        raise ValueError(
            f"vocode expects log-mel of shape (B, 1, F, M) or (B, F, M), got {tuple(log_mel.shape)}"
        )
    param = next(iter(vocoder.parameters()), None)
    if param is not None:  # HiFi-GAN: match its device and dtype
        log_mel = log_mel.to(device=param.device, dtype=param.dtype)
    else:
        log_mel = log_mel.to(device=vocoder.mel_basis.device)
    waveform = vocoder(log_mel)  # (B, T')
    return fix_frames(waveform.float(), log_mel.shape[1] * vocoder_hop_length(vocoder), dim=-1)
