"""PANNs Cnn14, 16 kHz checkpoint (Kong et al. 2020): 2048-d clip embedding for FD, 527 AudioSet logits for KL/IS.

Configuration of `Cnn14_16k_mAP=0.438.pth` as audioldm_eval uses it: window 512, hop 160, 64 mels,
50–8000 Hz, 527 classes. The front end reimplements torchlibrosa's `Spectrogram` (an STFT as two Conv1d
with DFT × Hann kernels, centred, reflect padding, power 2) and `LogmelFilterBank` (librosa's Slaney mel
matrix, 10·log10 with amin 1e-10, no top_db) with the same module names, so the official checkpoint
(which stores those kernels as `spectrogram_extractor.stft.conv_{real,imag}.weight` and
`logmel_extractor.melW`) loads with `strict=True`. Outputs, in eval mode:
"embedding" = ReLU(fc1(x)) (audioldm_eval's "2048") and "logits" = fc_audioset(embedding) (pre-sigmoid).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from melfusion.encoders.base import (
    Embedder,
    file_fingerprint,
    init_tiny_,
    load_torch_checkpoint,
    locate_weight_file,
    module_fingerprint,
)

PANNS_SAMPLE_RATE = 16000
PANNS_URL = "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth"
PANNS_FILES = ("Cnn14_16k_mAP=0.438.pth", "Cnn14_16k.safetensors", "Cnn14_16k_mAP%3D0.438.pth")


def panns_cache_dirs() -> list[Path]:
    """Where PANNs weights are looked for after --weights-dir and $MELFUSION_WEIGHTS_DIR (first: downloads)."""
    return [
        Path(torch.hub.get_dir()) / "checkpoints",
        Path("~/.cache/audioldm_eval/ckpt"),
        Path("~/panns_data"),
    ]


@dataclass(frozen=True)
class Cnn14Config:
    sample_rate: int = 16000
    window_size: int = 512
    hop_size: int = 160
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    classes_num: int = 527
    channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)


def _hz_to_slaney_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    min_log_mel = min_log_hz / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, mel)


def _slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax) → (n_mels, n_fft//2+1)."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)  # (F,)
    mel_pts = np.linspace(_hz_to_slaney_mel(np.array(fmin)), _hz_to_slaney_mel(np.array(fmax)), n_mels + 2)
    mel_f = _slaney_mel_to_hz(mel_pts)  # (M+2,) Hz
    fdiff = np.diff(mel_f)  # (M+1,)
    ramps = mel_f[:, None] - fft_freqs[None, :]  # (M+2, F)
    lower = -ramps[:-2] / fdiff[:-1, None]  # (M, F)
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]  # Slaney area normalisation
    return weights.astype(np.float32)


class STFT(nn.Module):
    """torchlibrosa.stft.STFT: Conv1d real/imag DFT kernels with a periodic Hann window."""

    def __init__(self, n_fft: int, hop_length: int, center: bool = True, pad_mode: str = "reflect") -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.center, self.pad_mode = n_fft, hop_length, center, pad_mode
        out = n_fft // 2 + 1
        window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # (n_fft,)
        k = np.arange(n_fft)[:, None] * np.arange(out)[None, :]  # (n_fft, out)
        w = np.exp(-2j * np.pi * k / n_fft) * window[:, None]
        self.conv_real = nn.Conv1d(1, out, kernel_size=n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, out, kernel_size=n_fft, stride=hop_length, bias=False)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(np.real(w).T[:, None, :].astype(np.float32)))
            self.conv_imag.weight.copy_(torch.from_numpy(np.imag(w).T[:, None, :].astype(np.float32)))
        for p in self.parameters():
            p.requires_grad = False

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = wave[:, None, :]  # (B, 1, L)
        if self.center:
            x = F.pad(x, (self.n_fft // 2, self.n_fft // 2), mode=self.pad_mode)
        real = self.conv_real(x)[:, None].transpose(2, 3)  # (B, 1, T, F)
        imag = self.conv_imag(x)[:, None].transpose(2, 3)
        return real, imag


class Spectrogram(nn.Module):
    """torchlibrosa.stft.Spectrogram (power 2)."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.stft = STFT(n_fft, hop_length)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(wave)
        return real**2 + imag**2  # (B, 1, T, F)


class LogmelFilterBank(nn.Module):
    """torchlibrosa.stft.LogmelFilterBank with ref 1.0, amin 1e-10, top_db None."""

    def __init__(
        self, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, amin: float = 1e-10
    ) -> None:
        super().__init__()
        self.amin = amin
        mel = slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax).T  # (F, M)
        self.melW = nn.Parameter(torch.from_numpy(np.ascontiguousarray(mel)), requires_grad=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(spec, self.melW)  # (B, 1, T, M)
        return 10.0 * torch.log10(torch.clamp(mel, min=self.amin))  # − 10·log10(max(amin, ref=1)) = 0


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int] = (2, 2)) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class Cnn14(nn.Module):
    """PANNs Cnn14 (inference path; spec-augment and mixup are training-only and have no weights)."""

    def __init__(self, config: Cnn14Config | None = None) -> None:
        super().__init__()
        self.config = c = config or Cnn14Config()
        self.spectrogram_extractor = Spectrogram(c.window_size, c.hop_size)
        self.logmel_extractor = LogmelFilterBank(c.sample_rate, c.window_size, c.mel_bins, c.fmin, c.fmax)
        self.bn0 = nn.BatchNorm2d(c.mel_bins)
        widths = (1, *c.channels)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(c.channels[-1], c.channels[-1], bias=True)
        self.fc_audioset = nn.Linear(c.channels[-1], c.classes_num, bias=True)

    @property
    def min_samples(self) -> int:
        """Shortest input that survives five 2× time poolings."""
        return 32 * self.config.hop_size

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, L) 16 kHz waveforms → {"embedding": (B, 2048), "logits": (B, 527)}."""
        x = self.logmel_extractor(self.spectrogram_extractor(wave))  # (B, 1, T, M)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BatchNorm over mel bins
        for i in range(1, 6):
            x = getattr(self, f"conv_block{i}")(x, pool_size=(2, 2))  # dropout is off in eval
        x = self.conv_block6(x, pool_size=(1, 1))  # (B, C, T/32, M/32)
        x = torch.mean(x, dim=3)  # (B, C, T')
        x = torch.amax(x, dim=2) + torch.mean(x, dim=2)  # (B, C) max + mean over time
        embedding = F.relu(self.fc1(x))  # (B, C)
        return {"embedding": embedding, "logits": self.fc_audioset(embedding)}


def _calibrate_batchnorm(model: Cnn14, seed: int) -> None:
    """Set a random model's BatchNorm statistics from synthetic clips (noise, tones) so outputs vary."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(model.config.sample_rate) / model.config.sample_rate  # 1 s
    freqs = torch.tensor([110.0, 220.0, 440.0, 880.0, 1760.0, 3520.0])
    tones = 0.3 * torch.sin(2 * torch.pi * freqs[:, None] * t[None, :])  # (6, L)
    noise = 0.1 * torch.randn(4, t.numel(), generator=g) * torch.linspace(0.1, 1.0, 4)[:, None]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.cat([tones, noise]))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


class PANNsEmbedder(Embedder):
    """Per clip: {"embedding": (2048,), "logits": (527,)}. Clips of equal length share a batch."""

    name = "panns"
    sample_rate = PANNS_SAMPLE_RATE
    consumes_paths = False

    def __init__(
        self, model: Cnn14, *, fingerprint: str, device: str | torch.device | None = None, batch_size: int = 8
    ) -> None:
        super().__init__(
            model, cache_id=f"panns-cnn14-16k-{fingerprint}", device=device, batch_size=batch_size
        )

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        allow_download: bool = False,
        batch_size: int = 8,
        config: Cnn14Config | None = None,
    ) -> PANNsEmbedder:
        """Load `Cnn14_16k_mAP=0.438.pth` from the weights dirs, torch hub's or audioldm_eval's cache."""
        cache = panns_cache_dirs()
        path = locate_weight_file(
            "PANNs Cnn14 (16 kHz)", PANNS_FILES, PANNS_URL, weights_dir, cache, download_dir=cache[0],
            allow_download=allow_download,
        )  # fmt: skip
        model = Cnn14(config)
        model.load_state_dict(load_torch_checkpoint(path), strict=True)
        return cls(model, fingerprint=file_fingerprint(path), device=device, batch_size=batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: object) -> PANNsEmbedder:
        """Random tiny Cnn14 (same front end and layer names, narrow, 16 classes) for tests and benchmarks."""
        torch.manual_seed(seed)
        model = init_tiny_(Cnn14(Cnn14Config(channels=(4, 8, 8, 16, 16, 32), classes_num=16)))
        _calibrate_batchnorm(model, seed)
        return cls(model, fingerprint=module_fingerprint(model), **kwargs)  # type: ignore[arg-type]

    @torch.inference_mode()
    def embed_waveforms(
        self, waves: Sequence[np.ndarray], progress: bool = False
    ) -> list[dict[str, np.ndarray]]:
        """Clips shorter than 32 hops (0.32 s) are zero-padded to that length."""
        min_len = self.model.min_samples
        clips = [np.pad(np.asarray(w, np.float32), (0, max(0, min_len - len(w)))) for w in waves]
        by_len: dict[int, list[int]] = {}
        for i, c in enumerate(clips):
            by_len.setdefault(len(c), []).append(i)
        batches = [
            ids[j : j + self.batch_size]
            for ids in by_len.values()
            for j in range(0, len(ids), self.batch_size)
        ]
        out: list[dict[str, np.ndarray]] = [{} for _ in clips]
        for ids in tqdm(batches, desc="PANNs", disable=not progress, leave=False):
            x = torch.from_numpy(np.stack([clips[i] for i in ids])).to(self.device)  # (B, L)
            res = self.model(x)
            emb, logits = res["embedding"].float().cpu().numpy(), res["logits"].float().cpu().numpy()
            for k, i in enumerate(ids):
                out[i] = {"embedding": emb[k], "logits": logits[k]}
        return out
