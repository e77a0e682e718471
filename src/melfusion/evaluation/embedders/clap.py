"""CLAP audio and text embeddings through transformers' `ClapModel` (for the CLAP score and IMSM).

Default checkpoint `laion/clap-htsat-unfused` (the one MeLFusion's released IMSM script uses). The LAION
music checkpoint `music_audioset_epoch_15_esc_90.14.pt` (HTSAT-base) is the standard CLAP for music; its
transformers conversion is `laion/larger_clap_music` (alias "music"). Audio is resampled to 48 kHz
before the feature extractor (the released IMSM script feeds audio at its file rate — a bug we do not
copy). Clips longer than 10 s are cropped by the extractor's `rand_trunc` with numpy's RNG seeded, so
results are reproducible; fused checkpoints use `fusion`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from melfusion.encoders.base import (
    Embedder,
    HashTokenizer,
    batched,
    features_tensor,
    load_hf_model,
    module_fingerprint,
    seeded_numpy,
)

CLAP_SAMPLE_RATE = 48000
CLAP_DEFAULT = "laion/clap-htsat-unfused"
CLAP_ALIASES = {"default": CLAP_DEFAULT, "unfused": CLAP_DEFAULT, "music": "laion/larger_clap_music"}


class ClapEmbedder(Embedder):
    """embed_waveforms(48 kHz clips) → [{"embedding": (D,)}]; embed_texts(texts) → (N, D); L2-normalised."""

    name = "clap"
    sample_rate = CLAP_SAMPLE_RATE
    consumes_paths = False

    def __init__(
        self,
        model: Any,
        feature_extractor: Any,
        tokenizer: Any,
        *,
        model_id: str,
        fingerprint: str,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        cache_id = f"clap-{model_id.replace('/', '--')}-{fingerprint}"
        super().__init__(model, cache_id=cache_id, device=device, batch_size=batch_size)
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.seed = seed
        self.model_id = model_id
        fused = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self.truncation = "fusion" if fused else "rand_trunc"

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale_a): the factor of CLAP's logits_per_audio."""
        return float(self.model.logit_scale_a.detach().exp().cpu())

    @classmethod
    def from_pretrained(
        cls,
        model_id: str = CLAP_DEFAULT,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        allow_download: bool = False,
        batch_size: int = 8,
    ) -> ClapEmbedder:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        model_id = CLAP_ALIASES.get(model_id, model_id)
        loaders = [ClapModel, ClapFeatureExtractor, AutoTokenizer]
        model, fe, tok = load_hf_model("CLAP", model_id, weights_dir, loaders, allow_download=allow_download)
        return cls(model, fe, tok, model_id=model_id, fingerprint="hf", device=device, batch_size=batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: Any) -> ClapEmbedder:
        """Random tiny ClapModel (RoBERTa + HTSAT towers) with a 2 s extractor and a hashing tokenizer."""
        from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

        text = dict(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=40,
            projection_dim=8,
        )
        audio = dict(
            spec_size=64,
            window_size=4,
            num_mel_bins=16,
            patch_embeds_hidden_size=8,
            depths=[1, 1],
            num_attention_heads=[1, 2],
            hidden_size=16,
            projection_dim=8,
            enable_fusion=False,
        )
        torch.manual_seed(seed)
        model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8))
        fe = ClapFeatureExtractor(feature_size=16, max_length_s=2, truncation="rand_trunc")
        tok = HashTokenizer(vocab_size=64, max_length=32, pad_id=1)  # RoBERTa pads with id 1
        return cls(model, fe, tok, model_id="tiny-clap", fingerprint=module_fingerprint(model), **kwargs)

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(self.tokenizer, HashTokenizer):
            return self.tokenizer(texts)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        outs = []
        for chunk in batched(list(texts), self.batch_size):
            enc = {k: v.to(self.device) for k, v in self._tokenize(chunk).items()}
            outs.append(features_tensor(self.model.get_text_features(**enc)).float().cpu().numpy())
        return np.concatenate(outs, axis=0)  # (N, D)

    @torch.inference_mode()
    def embed_waveforms(
        self, waves: Sequence[np.ndarray], progress: bool = False
    ) -> list[dict[str, np.ndarray]]:
        out: list[dict[str, np.ndarray]] = []
        chunks = list(batched(list(waves), self.batch_size))
        for chunk in tqdm(chunks, desc="CLAP", disable=not progress, leave=False):
            with seeded_numpy(self.seed):
                feats = self.feature_extractor(
                    [np.asarray(w, np.float32) for w in chunk],
                    sampling_rate=CLAP_SAMPLE_RATE,
                    truncation=self.truncation,
                    return_tensors="pt",
                )
            inputs = {k: v.to(self.device) for k, v in feats.items() if k in ("input_features", "is_longer")}
            emb = features_tensor(self.model.get_audio_features(**inputs)).float().cpu().numpy()  # (B, D)
            out.extend({"embedding": e} for e in emb)
        return out
