"""CLIP image and text embeddings through transformers' `CLIPModel` (ViT-B/32 default), for IMSM.

Images are opened with PIL and converted to RGB (MeLFusion's released IMSM script reads them with
`cv2.imread`, i.e. BGR — a bug we do not copy).
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
    HashTokenizer,
    batched,
    features_tensor,
    load_hf_model,
    module_fingerprint,
)

CLIP_DEFAULT = "openai/clip-vit-base-patch32"


def _image_processor_class() -> Any:
    try:  # transformers ≥ 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


def load_rgb(path: str | os.PathLike[str]) -> Any:
    """Open an image as RGB (PIL.Image)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


class ClipEmbedder(Embedder):
    """embed_images(PIL images or paths) → (N, D); embed_texts(texts) → (N, D); L2-normalised."""

    name = "clip"

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        *,
        model_id: str,
        fingerprint: str,
        device: str | torch.device | None = None,
        batch_size: int = 16,
    ) -> None:
        cache_id = f"clip-{model_id.replace('/', '--')}-{fingerprint}"
        super().__init__(model, cache_id=cache_id, device=device, batch_size=batch_size)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.model_id = model_id

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale): the factor of CLIP's logits_per_image (100 for the OpenAI checkpoints)."""
        return float(self.model.logit_scale.detach().exp().cpu())

    @classmethod
    def from_pretrained(
        cls,
        model_id: str = CLIP_DEFAULT,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        allow_download: bool = False,
        batch_size: int = 16,
    ) -> ClipEmbedder:
        from transformers import AutoTokenizer, CLIPModel

        loaders = [CLIPModel, _image_processor_class(), AutoTokenizer]
        model, proc, tok = load_hf_model(
            "CLIP", model_id, weights_dir, loaders, allow_download=allow_download
        )
        return cls(
            model, proc, tok, model_id=model_id, fingerprint="hf", device=device, batch_size=batch_size
        )

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: Any) -> ClipEmbedder:
        """Random tiny CLIPModel (32 px ViT, 1-layer text tower) with a hashing tokenizer."""
        from transformers import CLIPConfig, CLIPModel

        text = dict(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=63,
        )
        vision = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
        vision["intermediate_size"] = 32
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
        proc = _image_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        tok = HashTokenizer(vocab_size=64, max_length=32, pad_id=0)
        return cls(model, proc, tok, model_id="tiny-clip", fingerprint=module_fingerprint(model), **kwargs)

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(self.tokenizer, HashTokenizer):
            return self.tokenizer(texts)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        outs = []
        for chunk in batched(list(texts), self.batch_size):
            enc = {k: v.to(self.device) for k, v in self._tokenize(chunk).items()}
            feats = features_tensor(self.model.get_text_features(**enc))
            outs.append(torch.nn.functional.normalize(feats, dim=-1).float().cpu().numpy())
        return np.concatenate(outs, axis=0)  # (N, D)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        outs = []
        for chunk in batched(list(images), self.batch_size):
            pil = [load_rgb(im) if isinstance(im, (str, Path)) else im.convert("RGB") for im in chunk]
            pixels = self.image_processor(images=pil, return_tensors="pt")["pixel_values"].to(self.device)
            feats = features_tensor(self.model.get_image_features(pixel_values=pixels))  # (B, D)
            outs.append(torch.nn.functional.normalize(feats, dim=-1).float().cpu().numpy())
        return np.concatenate(outs, axis=0)  # (N, D)
