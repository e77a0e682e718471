"""Pluggable encoders into a joint image–audio space for pairing artworks with music.

An encoder is any object with
  - `name` (str) and `cache_id` (str: changes whenever its embeddings would; keys the embedding cache),
  - `embed_image_files(paths) -> (N, D)` and `embed_audio_files(paths) -> (N, D)` (numpy or tensors),
  - optionally `check_image(path)` / `check_audio(path)`: raise `MelfusionInputError` for an unusable file
    (the pairing tool's defaults are `load_image` and a soundfile probe).

Built in:
  - `imagebind`: ImageBind-huge (the paper's choice; needs the `imagebind` package and imagebind_huge.pth).
  - `tiny`: fixed random projections of colour/texture statistics and log-mel statistics into a shared
    32-d space — deterministic, offline and fast, for tests and dry runs. Its similarities carry no
    meaning.
  - `package.module:factory`: your own; `factory(device=..., batch_size=..., weights_dir=...)` returns an
    encoder (keyword arguments it does not accept are not passed).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from melfusion.errors import MelfusionInputError

ENCODER_NAMES = ("imagebind", "tiny")


@runtime_checkable
class PairingEncoder(Protocol):
    name: str
    cache_id: str

    def embed_image_files(self, paths: Sequence[Path]) -> Any: ...

    def embed_audio_files(self, paths: Sequence[Path]) -> Any: ...


def check_image_file(path: str | os.PathLike[str]) -> None:
    """Raise MelfusionInputError when `path` is not a readable image (non-image, truncated, too large)."""
    from melfusion.guidance.preprocess import load_image

    load_image(path)


def check_audio_file(path: str | os.PathLike[str]) -> None:
    """Raise MelfusionInputError when soundfile cannot open `path` or it holds no samples."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MelfusionInputError(f"not a readable audio file: {path} ({reason})") from None
    if info.frames <= 0:
        raise MelfusionInputError(f"audio file {path} contains no samples")


class ImageBindPairingEncoder:
    """ImageBind-huge vision and audio embeddings (1024-d), the Art2Mus pairing space."""

    name = "imagebind"

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.cache_id = embedder.cache_id

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 8,
        allow_download: bool = False,
    ) -> ImageBindPairingEncoder:
        from melfusion.encoders.imagebind import ImageBindEmbedder

        try:
            embedder = ImageBindEmbedder.from_pretrained(
                weights_dir, device=device, batch_size=batch_size, allow_download=allow_download
            )
        except MelfusionInputError as err:
            reason = str(err).removeprefix("IBSc needs ImageBind: ")
            raise type(err)(
                f"--encoder imagebind (the paper's pairing space) is not available here: {reason}; "
                "--encoder tiny does a dry run, --encoder package.module:factory plugs in your own"
            ) from None
        return cls(embedder)

    def embed_image_files(self, paths: Sequence[Path]) -> np.ndarray:
        return self.embedder.embed_image_files(paths)

    def embed_audio_files(self, paths: Sequence[Path]) -> np.ndarray:
        return self.embedder.embed_audio_files(paths)


class TinyPairingEncoder:
    """Deterministic toy joint space: image colour statistics and audio log-mel statistics, each mapped by a
    fixed random matrix (seeded) to `dim` dimensions. For tests and dry runs only."""

    name = "tiny"
    sample_rate = 16000

    def __init__(self, dim: int = 32, seed: int = 0, audio_seconds: float = 10.0) -> None:
        self.dim = int(dim)
        self.seed = int(seed)
        self.audio_seconds = float(audio_seconds)
        rng = np.random.default_rng(seed)
        self._w_image = rng.standard_normal((3 * 2 + 64, self.dim)).astype(np.float32)
        self._w_audio = rng.standard_normal((2 * 32, self.dim)).astype(np.float32)
        digest = hashlib.sha256(f"tiny:{dim}:{seed}:{audio_seconds}".encode()).hexdigest()[:16]
        self.cache_id = f"tiny-{digest}"

    def _image_features(self, path: Path) -> np.ndarray:
        from melfusion.guidance.preprocess import load_image

        im = load_image(path).resize((8, 8))
        arr = np.asarray(im, dtype=np.float32) / 255.0  # (8, 8, 3)
        grey = arr.mean(axis=2).reshape(-1)  # (64,)
        return np.concatenate([arr.mean(axis=(0, 1)), arr.std(axis=(0, 1)), grey - grey.mean()])

    def _audio_features(self, path: Path) -> np.ndarray:
        from melfusion.audio.io import load_audio
        from melfusion.audio.mel import MelConfig, mel_spectrogram

        wave = load_audio(path, self.sample_rate)[: int(self.audio_seconds * self.sample_rate)]
        if wave.shape[0] < 2048:
            wave = np.pad(wave, (0, 2048 - wave.shape[0]))
        mel = mel_spectrogram(torch.from_numpy(wave)[None], MelConfig(n_mels=32))[0].numpy()  # (F, 32)
        return np.concatenate([mel.mean(axis=0) / 10.0, mel.std(axis=0)])

    def embed_image_files(self, paths: Sequence[Path]) -> np.ndarray:
        feats = np.stack([self._image_features(Path(p)) for p in paths])
        return feats @ self._w_image

    def embed_audio_files(self, paths: Sequence[Path]) -> np.ndarray:
        feats = np.stack([self._audio_features(Path(p)) for p in paths])
        return feats @ self._w_audio


def _call_with_accepted(factory: Any, kwargs: dict[str, Any]) -> Any:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return factory()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return factory(**kwargs)
    return factory(**{k: v for k, v in kwargs.items() if k in params})


def build_pairing_encoder(
    spec: str | PairingEncoder,
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    batch_size: int = 8,
    allow_download: bool = False,
) -> PairingEncoder:
    """`imagebind`, `tiny`, `package.module:factory`, or an encoder object (returned as is)."""
    if not isinstance(spec, str):
        missing = [a for a in ("cache_id", "embed_image_files", "embed_audio_files") if not hasattr(spec, a)]
        if missing:
            raise MelfusionInputError(f"pairing encoder {spec!r} lacks {', '.join(missing)}")
        return spec
    if spec == "imagebind":
        return ImageBindPairingEncoder.from_pretrained(
            weights_dir, device=device, batch_size=batch_size, allow_download=allow_download
        )
    if spec == "tiny":
        return TinyPairingEncoder()
    if ":" not in spec:
        raise MelfusionInputError(
            f"unknown encoder {spec!r}; use imagebind, tiny, or package.module:factory for your own"
        )
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise MelfusionInputError(f"cannot load encoder {spec!r} ({err})") from None
    encoder = _call_with_accepted(
        factory,
        {
            "device": device,
            "batch_size": batch_size,
            "weights_dir": weights_dir,
            "allow_download": allow_download,
        },
    )
    encoder = build_pairing_encoder(encoder)
    if not getattr(encoder, "name", None):
        encoder.name = spec
    return encoder
