"""Image encoders for Art2Mus: the frozen model whose embedding the projection layer turns into GPT-2 tokens.

- `ImageBindImageEncoder`: ImageBind-huge vision (1024-d), the paper's encoder. It shares a space with
  ImageBind audio, so generated waveforms can be ranked by image–audio similarity. Needs the `imagebind`
  package (not on PyPI; it brings torchaudio) and `imagebind_huge.pth`; not saved with the pipeline.
- `ClipImageEncoder`: transformers' `CLIPVisionModelWithProjection` + its image processor, the standard
  alternative; these are pipeline components (`image_encoder`, `image_processor`) and are saved with it.
  CLIP has no audio tower, so image-only calls are not ranked.

An encoder here is any object with `name`, `embed_dim`, `shares_audio_space`, `cache_id`,
`encode_images(list of PIL images) -> (B, D) tensor`, and, when `shares_audio_space`,
`encode_audio(waveforms (B, T) numpy, sample_rate) -> (B, D) tensor`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class ImageEncoder(Protocol):
    name: str
    embed_dim: int
    shares_audio_space: bool
    cache_id: str

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor: ...


class ClipImageEncoder:
    """CLIP vision tower with projection: `image_embeds` (B, projection_dim), not normalised."""

    name = "clip"
    shares_audio_space = False

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.embed_dim = int(model.config.projection_dim)
        self._cache_id: str | None = None

    @property
    def cache_id(self) -> str:
        if self._cache_id is None:
            from melfusion.encoders.base import module_fingerprint

            self._cache_id = f"clip-vision-{module_fingerprint(self.model)}"
        return self._cache_id

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        param = next(self.model.parameters())
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixels = pixels["pixel_values"].to(device=param.device, dtype=param.dtype)
        return self.model(pixel_values=pixels).image_embeds.float()  # (B, D)


class ImageBindImageEncoder:
    """ImageBind-huge vision/audio embeddings through the `imagebind` package's own loaders."""

    name = "imagebind"
    shares_audio_space = True
    embed_dim = 1024

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder  # melfusion.encoders.imagebind.ImageBindEmbedder
        self.cache_id = embedder.cache_id

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        allow_download: bool = False,
    ) -> ImageBindImageEncoder:
        """Raises MelfusionInputError naming what is missing (package or imagebind_huge.pth)."""
        from melfusion.encoders.imagebind import ImageBindEmbedder
        from melfusion.errors import MelfusionInputError

        try:
            embedder = ImageBindEmbedder.from_pretrained(
                weights_dir, device=device, allow_download=allow_download
            )
        except MelfusionInputError as err:
            reason = str(err).removeprefix("IBSc needs ImageBind: ")
            raise type(err)(
                f"this Art2Mus pipeline encodes images with ImageBind-huge, which is not available here: {reason}. "
                "Alternatively pass image_embeds= (precomputed embeddings) or set another encoder with "
                "pipe.set_image_encoder(...)"
            ) from None
        return cls(embedder)

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        with tempfile.TemporaryDirectory(prefix="art2mus-img-") as tmp:
            paths = []
            for i, im in enumerate(images):
                path = Path(tmp) / f"{i:04d}.png"
                im.convert("RGB").save(path)
                paths.append(path)
            return torch.from_numpy(np.asarray(self.embedder.embed_image_files(paths), dtype=np.float32))

    def encode_audio(self, waveforms: np.ndarray, sample_rate: int) -> torch.Tensor:
        import soundfile as sf

        with tempfile.TemporaryDirectory(prefix="art2mus-wav-") as tmp:
            paths = []
            for i, wave in enumerate(np.asarray(waveforms, dtype=np.float32)):
                path = Path(tmp) / f"{i:04d}.wav"
                sf.write(path, wave, sample_rate)
                paths.append(path)
            return torch.from_numpy(np.asarray(self.embedder.embed_audio_files(paths), dtype=np.float32))
