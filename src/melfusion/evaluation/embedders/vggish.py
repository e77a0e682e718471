"""VGGish (Hershey et al. 2017) for FAD: 16 kHz, 0.96 s examples, 128-d pre-activation embeddings, no PCA.

The network is torchvggish's `VGG` with the same module names (`features.*`, `embeddings.*`), so the
official converted checkpoint `vggish-10086976.pth` loads unchanged. FAD uses the output of the last
Linear layer *before* its ReLU and without the PCA/quantisation post-processor — the convention of
Kilgour et al.'s FAD, audioldm_eval (`use_pca=False, use_activation=False`) and frechet-audio-distance.

Input features follow the reference `vggish_input.waveform_to_examples` / `mel_features.py`:
25 ms periodic-Hann frames every 10 ms, |rfft| with a 512-point FFT, 64 HTK-mel bands 125–7500 Hz,
log(mel + 0.01), and non-overlapping 96-frame (0.96 s) examples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from melfusion.encoders.base import (
    Embedder,
    batched,
    file_fingerprint,
    init_tiny_,
    load_torch_checkpoint,
    locate_weight_file,
    module_fingerprint,
)

VGGISH_SAMPLE_RATE = 16000
VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
VGGISH_FILES = ("vggish-10086976.pth", "vggish.safetensors", "vggish.pth")


def vggish_cache_dirs() -> list[Path]:
    """Where VGGish weights are looked for after --weights-dir and $MELFUSION_WEIGHTS_DIR (first: downloads)."""
    return [Path(torch.hub.get_dir()) / "checkpoints"]


# vggish_params.py
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames, window = hop


@dataclass(frozen=True)
class VGGishConfig:
    channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512)  # conv widths; "M" pools after 1, 2, 4, 6
    hidden_size: int = 4096
    embedding_size: int = 128


def _hz_to_htk_mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def vggish_mel_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = 257,
    sample_rate: int = VGGISH_SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """mel_features.spectrogram_to_mel_matrix → (num_spectrogram_bins, num_mel_bins); DC row zeroed (HTK)."""
    bins_mel = _hz_to_htk_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins))  # (F,)
    edges = np.linspace(_hz_to_htk_mel(lower_hz), _hz_to_htk_mel(upper_hz), num_mel_bins + 2)  # (M+2,)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    lower_slope = (bins_mel[:, None] - lower[None, :]) / (centre - lower)[None, :]  # (F, M)
    upper_slope = (upper[None, :] - bins_mel[:, None]) / (upper - centre)[None, :]
    weights = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    weights[0, :] = 0.0
    return weights


_MEL_MATRIX = vggish_mel_matrix()


def waveform_to_examples(wave: np.ndarray) -> np.ndarray:
    """16 kHz mono waveform → (n_examples, 96, 64) log-mel examples, float32.

    A clip shorter than one example (0.96 s + the 15 ms window tail) is zero-padded to one example;
    the reference code would return no example at all for it.
    """
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform, got shape {x.shape}")
    win = round(VGGISH_SAMPLE_RATE * STFT_WINDOW_SECONDS)  # 400
    hop = round(VGGISH_SAMPLE_RATE * STFT_HOP_SECONDS)  # 160
    n_fft = 2 ** int(np.ceil(np.log2(win)))  # 512
    min_len = win + hop * (EXAMPLE_FRAMES - 1)
    if x.size < min_len:
        x = np.pad(x, (0, min_len - x.size))
    n_frames = 1 + (x.size - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]  # (T, win)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi / win * np.arange(win))  # periodic Hann
    spec = np.abs(np.fft.rfft(x[idx] * window, n=n_fft, axis=1))  # (T, 257) magnitude
    log_mel = np.log(spec @ _MEL_MATRIX + LOG_OFFSET)  # (T, 64)
    n_examples = 1 + (log_mel.shape[0] - EXAMPLE_FRAMES) // EXAMPLE_FRAMES
    examples = log_mel[: n_examples * EXAMPLE_FRAMES].reshape(n_examples, EXAMPLE_FRAMES, NUM_MEL_BINS)
    return examples.astype(np.float32)  # (E, 96, 64)


def _make_layers(channels: Sequence[int]) -> nn.Sequential:
    c1, c2, c3, c4, c5, c6 = channels
    plan: list[int | str] = [c1, "M", c2, "M", c3, c4, "M", c5, c6, "M"]
    layers: list[nn.Module] = []
    in_ch = 1
    for v in plan:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(v)
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """torchvggish's VGG: `features` (conv stack) and `embeddings` (3 Linear + ReLU)."""

    def __init__(self, config: VGGishConfig | None = None) -> None:
        super().__init__()
        self.config = config or VGGishConfig()
        c = self.config
        self.features = _make_layers(c.channels)
        flat = c.channels[-1] * 4 * 6  # 96×64 input pooled 4× → 6×4
        self.embeddings = nn.Sequential(
            nn.Linear(flat, c.hidden_size),
            nn.ReLU(True),
            nn.Linear(c.hidden_size, c.hidden_size),
            nn.ReLU(True),
            nn.Linear(c.hidden_size, c.embedding_size),
            nn.ReLU(True),
        )

    def forward(self, examples: torch.Tensor, pre_activation: bool = True) -> torch.Tensor:
        """(B, 1, 96, 64) log-mel examples → (B, embedding_size)."""
        x = self.features(examples)  # (B, C, 6, 4)
        x = x.transpose(1, 3).transpose(1, 2).contiguous()  # (B, 6, 4, C): TF's NHWC flatten order
        x = x.view(x.size(0), -1)  # (B, 6·4·C)
        head = self.embeddings[:-1] if pre_activation else self.embeddings
        return head(x)  # (B, embedding_size)


class VGGishEmbedder(Embedder):
    """Per clip: {"frames": (n_examples, 128)} — one pre-activation embedding per 0.96 s example."""

    name = "vggish"
    sample_rate = VGGISH_SAMPLE_RATE
    consumes_paths = False

    def __init__(
        self,
        model: VGGish,
        *,
        fingerprint: str,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        super().__init__(
            model, cache_id=f"vggish-preact-nopca-{fingerprint}", device=device, batch_size=batch_size
        )

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        allow_download: bool = False,
        batch_size: int = 64,
        config: VGGishConfig | None = None,
    ) -> VGGishEmbedder:
        """Load `vggish-10086976.pth` (torchvggish) from the weights dirs or torch hub's checkpoints."""
        cache = vggish_cache_dirs()
        path = locate_weight_file(
            "VGGish",
            VGGISH_FILES,
            VGGISH_URL,
            weights_dir,
            cache,
            download_dir=cache[0],
            allow_download=allow_download,
        )
        model = VGGish(config)
        model.load_state_dict(load_torch_checkpoint(path), strict=True)
        return cls(model, fingerprint=file_fingerprint(path), device=device, batch_size=batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: object) -> VGGishEmbedder:
        """Random tiny VGGish (same structure, narrow layers) for tests and benchmarks."""
        torch.manual_seed(seed)
        model = VGGish(VGGishConfig(channels=(4, 8, 8, 8, 16, 16), hidden_size=32, embedding_size=16))
        init_tiny_(model)
        return cls(model, fingerprint=module_fingerprint(model), **kwargs)  # type: ignore[arg-type]

    @torch.inference_mode()
    def embed_waveforms(
        self, waves: Sequence[np.ndarray], progress: bool = False
    ) -> list[dict[str, np.ndarray]]:
        examples = [waveform_to_examples(w) for w in waves]  # each (E_i, 96, 64)
        flat = np.concatenate(examples, axis=0) if examples else np.zeros((0, EXAMPLE_FRAMES, NUM_MEL_BINS))
        outs: list[np.ndarray] = []
        chunks = list(batched(range(flat.shape[0]), self.batch_size))
        for chunk in tqdm(chunks, desc="VGGish", disable=not progress, leave=False):
            batch = flat[chunk[0] : chunk[-1] + 1]  # (B, 96, 64)
            x = torch.from_numpy(batch).unsqueeze(1).to(self.device)  # (B, 1, 96, 64)
            outs.append(self.model(x).float().cpu().numpy())
        emb = np.concatenate(outs, axis=0) if outs else np.zeros((0, self.model.config.embedding_size))
        result, start = [], 0
        for ex in examples:
            result.append({"frames": emb[start : start + ex.shape[0]].astype(np.float32)})
            start += ex.shape[0]
        return result
