"""ImageBind (huge) audio and image embeddings for Art2Mus's IBSc — only when the `imagebind` package is
installed (it is not on PyPI and depends on torchaudio, which this project does not install).

The package's own loaders read the files (`load_and_transform_audio_data` for audio, 16 kHz 2 s clips ×3;
`load_and_transform_vision_data` for 224 px RGB images), so this embedder consumes paths, not waveforms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melfusion.encoders.base import (
    Embedder,
    batched,
    file_fingerprint,
    load_torch_checkpoint,
    locate_weight_file,
)
from melfusion.errors import MelfusionInputError

IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
IMAGEBIND_FILES = ("imagebind_huge.pth",)


def imagebind_cache_dirs() -> list[Path]:
    """Where ImageBind weights are looked for after --weights-dir and $MELFUSION_WEIGHTS_DIR (the package's
    own .checkpoints folder, then torch hub's, where downloads go)."""
    return [Path(".checkpoints"), Path(torch.hub.get_dir()) / "checkpoints"]


def imagebind_available() -> bool:
    try:
        import imagebind.models.imagebind_model  # noqa: F401
    except Exception:  # ImportError, or torchaudio missing underneath
        return False
    return True


class ImageBindEmbedder(Embedder):
    """embed_audio_files(paths) → (N, 1024); embed_image_files(paths) → (N, 1024)."""

    name = "imagebind"
    consumes_paths = True

    def __init__(
        self, model: Any, *, fingerprint: str, device: str | torch.device | None = None, batch_size: int = 8
    ) -> None:
        super().__init__(
            model, cache_id=f"imagebind-huge-{fingerprint}", device=device, batch_size=batch_size
        )

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        allow_download: bool = False,
        batch_size: int = 8,
    ) -> ImageBindEmbedder:
        if not imagebind_available():
            raise MelfusionInputError(
                "IBSc needs ImageBind: install it with `pip install git+https://github.com/facebookresearch/"
                "ImageBind` (it brings torchaudio), then put imagebind_huge.pth in --weights-dir"
            )
        from imagebind.models import imagebind_model

        cache = imagebind_cache_dirs()
        path = locate_weight_file(
            "ImageBind (huge)", IMAGEBIND_FILES, IMAGEBIND_URL, weights_dir, cache, download_dir=cache[1],
            allow_download=allow_download,
        )  # fmt: skip
        model = imagebind_model.imagebind_huge(pretrained=False)
        model.load_state_dict(load_torch_checkpoint(path), strict=True)
        return cls(model, fingerprint=file_fingerprint(path), device=device, batch_size=batch_size)

    @torch.inference_mode()
    def _embed(self, paths: Sequence[str | Path], modality: str) -> np.ndarray:
        from imagebind import data
        from imagebind.models.imagebind_model import ModalityType

        loader = {
            "audio": (ModalityType.AUDIO, data.load_and_transform_audio_data),
            "vision": (ModalityType.VISION, data.load_and_transform_vision_data),
        }[modality]
        outs = []
        for chunk in batched([str(p) for p in paths], self.batch_size):
            inputs = {loader[0]: loader[1](chunk, self.device)}
            outs.append(self.model(inputs)[loader[0]].float().cpu().numpy())
        return np.concatenate(outs, axis=0)

    def embed_audio_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        return self._embed(paths, "audio")

    def embed_image_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        return self._embed(paths, "vision")
