"""Log-mel spectrograms in the AudioLDM / TANGO convention (their `TacotronSTFT.mel_spectrogram`).

TacotronSTFT: reflect-pad n_fft // 2 on both sides, periodic Hann window, |STFT|, slaney mel basis
(librosa), natural log of clamp(min=1e-5) ("dynamic range compression"). AudioLDM-S/TANGO use
16 kHz, n_fft = win = 1024, hop 160, 64 mels, 0-8000 Hz, so 10.24 s <-> 1024 frames.
`MelConfig(center=False)` selects the HiFi-GAN / AudioLDM-training variant instead
(reflect-pad (n_fft - hop) // 2, frames shifted by half a hop). Both give T // hop frames here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np
import torch
import torch.nn.functional as F

LOG_CLAMP = 1e-5  # dynamic range compression floor: log(1e-5) = -11.51 is the "silence" value


@dataclass(frozen=True)
class MelConfig:
    """STFT / mel parameters. Defaults are AudioLDM-S / TANGO's."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    # True: TacotronSTFT padding n_fft // 2 (AudioLDM, TANGO). False: HiFi-GAN padding (n_fft - hop) // 2.
    center: bool = True

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MelConfig.{name} must be a positive int, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"MelConfig.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.hop_length > self.win_length:
            raise ValueError(f"MelConfig.hop_length ({self.hop_length}) must be <= win_length")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"MelConfig needs 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, "
                f"fmax={self.fmax}, sample_rate={self.sample_rate}"
            )

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def pad(self) -> int:
        """Reflect padding added on each side of the waveform before framing."""
        return self.n_fft // 2 if self.center else (self.n_fft - self.hop_length) // 2

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, seconds: float) -> int:
        """Mel frames for a clip of `seconds` (10.24 s -> 1024 at the defaults)."""
        return round(seconds * self.sample_rate / self.hop_length)

    def num_samples(self, frames: int) -> int:
        """Waveform samples that `frames` mel frames cover (frames * hop)."""
        return int(frames) * self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MelConfig:
        """Build from a dict; keys that are not MelConfig fields are ignored (e.g. a vocoder config)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@functools.lru_cache(maxsize=16)
def _mel_basis_np(config: MelConfig) -> np.ndarray:
    # (n_mels, n_freqs); librosa's defaults are slaney mel scale + slaney area normalisation,
    # exactly what TacotronSTFT calls.
    basis = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax
    )
    basis.setflags(write=False)
    return basis


def mel_basis(config: MelConfig) -> torch.Tensor:
    """Slaney mel filterbank as TacotronSTFT builds it. Returns a fresh (n_mels, n_fft // 2 + 1) float32."""
    return torch.tensor(_mel_basis_np(config), dtype=torch.float32)


def stft_window(config: MelConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Periodic Hann of win_length, zero-padded to n_fft (centred, as torch.stft does). (n_fft,)"""
    window = torch.hann_window(config.win_length, periodic=True, dtype=torch.float32, device=device)
    left = (config.n_fft - config.win_length) // 2
    return F.pad(window, (left, config.n_fft - config.win_length - left))


def fix_frames(x: torch.Tensor, num_frames: int, dim: int = -1, value: float = 0.0) -> torch.Tensor:
    """Crop or right-pad (with `value`) dimension `dim` to exactly `num_frames`."""
    size = x.shape[dim]
    if size >= num_frames:
        return x.narrow(dim, 0, num_frames)
    pad_shape = list(x.shape)
    pad_shape[dim] = num_frames - size
    return torch.cat([x, x.new_full(pad_shape, value)], dim=dim)


def pad_frames_to_multiple(log_mel: torch.Tensor, multiple: int) -> torch.Tensor:
    """Right-pad the frame axis of a log-mel with the log floor, log(LOG_CLAMP), up to a multiple of
    `multiple` (an audio VAE's downsampling factor). (B, F, n_mels) -> (B, ceil(F / multiple) * multiple, n_mels)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    frames = math.ceil(log_mel.shape[1] / multiple) * multiple
    return fix_frames(log_mel, frames, dim=1, value=math.log(LOG_CLAMP))


def stft(waveform: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Complex STFT framed as the mel transform frames it. (B, T) -> (B, n_freqs, T // hop)."""
    num_frames = waveform.shape[-1] // config.hop_length
    pad = config.pad
    # Reflect padding needs pad < T; very short clips fall back to zero padding.
    mode = "reflect" if waveform.shape[-1] > pad else "constant"
    x = F.pad(waveform.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)  # (B, T + 2 * pad)
    if x.shape[-1] < config.n_fft:  # not even one full frame: zero-pad so torch.stft can run
        x = F.pad(x, (0, config.n_fft - x.shape[-1]))
    spec = torch.stft(
        x,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.n_fft,
        window=stft_window(config, device=x.device),
        center=False,
        return_complex=True,
    )  # (B, n_freqs, frames'), frames' = T // hop (+ 1 when center)
    return fix_frames(spec, num_frames, dim=-1)


def istft(spec: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Inverse of `stft` by weighted overlap-add. (B, n_freqs, F) -> (B, F * hop).

    Written out instead of torch.istft because torch's NOLA check rejects the (n_fft - hop) // 2
    framing, whose first window sample (0 for Hann) is kept.
    """
    batch, _, num_frames = spec.shape
    n_fft, hop, pad = config.n_fft, config.hop_length, config.pad
    window = stft_window(config, device=spec.device)  # (n_fft,)
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # (B, n_fft, F)
    length = (num_frames - 1) * hop + n_fft
    fold = dict(output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
    y = F.fold(frames, **fold).reshape(batch, length)  # (B, L) overlap-added frames
    ones = window.new_ones(1, 1, num_frames)
    env = F.conv_transpose1d(ones, window.square().view(1, 1, n_fft), stride=hop)[0]  # (1, L) sum of w^2
    y = y / env.clamp_min(1e-8)
    y = y[:, pad : pad + num_frames * hop]
    return fix_frames(y, num_frames * hop, dim=-1)


def mel_spectrogram(waveform: torch.Tensor | np.ndarray, config: MelConfig | None = None) -> torch.Tensor:
    """Log-mel spectrogram, TacotronSTFT convention. (B, T) or (T,) -> (B, T // hop, n_mels) float32.

    A 1-D input is treated as a batch of one. Input is expected in [-1, 1] (TacotronSTFT asserts it).
    """
    config = config or MelConfig()
    x = torch.as_tensor(waveform)
    if x.ndim == 1:
        x = x.unsqueeze(0)  # (1, T)
    if x.ndim != 2:
        raise ValueError(f"mel_spectrogram expects a waveform of shape (B, T) or (T,), got {tuple(x.shape)}")
    x = x.float()
    magnitude = stft(x, config).abs()  # (B, n_freqs, F)
    basis = mel_basis(config).to(x.device)  # (n_mels, n_freqs)
    mel = torch.matmul(basis, magnitude)  # (B, n_mels, F)
    log_mel = torch.log(mel.clamp_min(LOG_CLAMP))  # dynamic range compression
    return log_mel.transpose(1, 2).contiguous()  # (B, F, n_mels)


def pad_or_crop(
    waveform: np.ndarray | torch.Tensor,
    num_samples: int,
    *,
    random_crop: bool = False,
    generator: np.random.Generator | torch.Generator | None = None,
) -> np.ndarray | torch.Tensor:
    """Crop or zero-pad the last axis to `num_samples`; returns the same array type.

    Crops keep the start unless `random_crop`, which draws the offset from `generator`
    (a numpy Generator for arrays, a torch.Generator for tensors; a fresh one when None).
    """
    num_samples = int(num_samples)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    length = waveform.shape[-1]
    is_torch = isinstance(waveform, torch.Tensor)
    if length > num_samples:
        offset = 0
        if random_crop:
            high = length - num_samples + 1
            if is_torch:
                if generator is not None and not isinstance(generator, torch.Generator):
                    raise TypeError("pad_or_crop: a torch.Tensor needs a torch.Generator (or None)")
                offset = int(torch.randint(0, high, (1,), generator=generator).item())
            else:
                if generator is not None and not isinstance(generator, np.random.Generator):
                    raise TypeError("pad_or_crop: a numpy array needs a numpy.random.Generator (or None)")
                rng = generator if generator is not None else np.random.default_rng()
                offset = int(rng.integers(0, high))
        return waveform[..., offset : offset + num_samples]
    if length == num_samples:
        return waveform
    if is_torch:
        return F.pad(waveform, (0, num_samples - length))
    widths = [(0, 0)] * (waveform.ndim - 1) + [(0, num_samples - length)]
    return np.pad(waveform, widths)
