"""Toy-size Art2Mus / AudioLDM 2 components built in code (no hub access), for tests and dry runs.

Same classes as the full-size model (diffusers' AudioLDM2UNet2DConditionModel, AudioLDM2ProjectionModel,
AutoencoderKL, DDIMScheduler; transformers' ClapModel, T5EncoderModel, GPT-2, SpeechT5HifiGan,
CLIPVisionModelWithProjection), random weights, and character-level RoBERTa / T5 tokenizers built from
in-memory vocabularies. Audio: 16 kHz, hop 160 (AudioLDM's), `n_mels` mel bins.
"""

from __future__ import annotations

import string
from typing import Any

import torch

_CHARS = list(string.ascii_letters + string.digits + ".,;:'!?-()")


def tiny_tokenizers(model_max_length: int = 48) -> tuple[Any, Any]:
    """(RobertaTokenizer, T5Tokenizer) over single characters (RoBERTa: byte-level 'Ġ' word starts)."""
    from transformers import RobertaTokenizer, T5Tokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for piece in [*_CHARS, *("Ġ" + c for c in _CHARS), "Ġ"]:
        vocab.setdefault(piece, len(vocab))
    roberta = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in _CHARS] + [("▁" + c, -3.5) for c in _CHARS]
    t5 = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)
    return roberta, t5


def build_tiny_art2mus_components(
    *,
    seed: int = 0,
    num_image_tokens: int = 1,
    image_embed_dim: int = 24,
    image_encoder: str = "clip",
    audio_seconds: float = 0.64,
    n_mels: int = 16,
    language_model_class: str = "GPT2Model",
    lm_dim: int = 16,
    t5_dim: int = 24,
    max_new_tokens: int = 8,
) -> dict[str, Any]:
    """Keyword arguments for `Art2MusPipeline(**components)`.

    image_encoder: "clip" (a tiny CLIPVisionModelWithProjection + processor) or "none".
    language_model_class: "GPT2Model" (as the released AudioLDM 2 checkpoints) or "GPT2LMHeadModel"
    (what diffusers' own AudioLDM2Pipeline.generate_language_model needs with transformers >= 5).
    """
    from diffusers import (
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        GPT2Config,
        GPT2LMHeadModel,
        GPT2Model,
        SpeechT5HifiGan,
        T5Config,
        T5EncoderModel,
    )

    from melfusion.encoders.clip import _image_processor_class
    from melfusion.models.vocoder import tiny_hifigan_config
    from melfusion.pipelines.art2mus.projection import ImageProjectionLayer

    if language_model_class not in ("GPT2Model", "GPT2LMHeadModel"):
        raise ValueError("language_model_class must be GPT2Model or GPT2LMHeadModel")
    if image_encoder not in ("clip", "none"):
        raise ValueError("image_encoder must be 'clip' or 'none' for the tiny preset")
    vae_scale = 2  # two VAE blocks
    hop = 160
    frames = round(audio_seconds * 16000 / hop)
    sample_size = max(1, frames // vae_scale)
    tokenizer, tokenizer_2 = tiny_tokenizers()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = AudioLDM2UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=([None, lm_dim, t5_dim], [None, lm_dim, t5_dim]),
            norm_num_groups=8,
            attention_head_dim=4,
        )
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            block_out_channels=[8, 16],
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
        )
        text_cfg = ClapTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=tokenizer.model_max_length + 4,
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
            projection_dim=16,
        )
        audio_cfg = ClapAudioConfig(
            spec_size=64,
            window_size=4,
            num_mel_bins=16,
            patch_embeds_hidden_size=8,
            depths=[1, 1],
            num_attention_heads=[1, 2],
            hidden_size=16,
            projection_dim=16,
            enable_fusion=False,
        )
        text_encoder = ClapModel(
            ClapConfig(text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=16)
        )
        text_encoder_2 = T5EncoderModel(
            T5Config(vocab_size=len(tokenizer_2), d_model=t5_dim, d_ff=32, d_kv=8, num_heads=2, num_layers=1)
        )
        lm_config = GPT2Config(
            n_embd=lm_dim, n_head=2, n_layer=1, vocab_size=8, n_positions=128, bos_token_id=0, eos_token_id=0
        )
        lm_cls = GPT2Model if language_model_class == "GPT2Model" else GPT2LMHeadModel
        language_model = lm_cls(lm_config)
        language_model.config.max_new_tokens = max_new_tokens
        projection_model = AudioLDM2ProjectionModel(
            text_encoder_dim=16, text_encoder_1_dim=t5_dim, langauge_model_dim=lm_dim
        )
        vocoder = SpeechT5HifiGan(tiny_hifigan_config(n_mels))
        image_projection = ImageProjectionLayer(
            image_embed_dim=image_embed_dim, language_model_dim=lm_dim, num_tokens=num_image_tokens
        )
        clip = clip_processor = None
        if image_encoder == "clip":
            clip = CLIPVisionModelWithProjection(
                CLIPVisionConfig(
                    image_size=32,
                    patch_size=8,
                    hidden_size=16,
                    intermediate_size=32,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    projection_dim=image_embed_dim,
                )
            )
            clip_processor = _image_processor_class()(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            )
    scheduler = DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    feature_extractor = ClapFeatureExtractor(feature_size=16, max_length_s=2, truncation="rand_trunc")
    for module in (unet, vae, text_encoder, text_encoder_2, language_model, projection_model, vocoder, clip):
        if module is not None:
            module.eval()
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "projection_model": projection_model,
        "language_model": language_model,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "feature_extractor": feature_extractor,
        "unet": unet,
        "scheduler": scheduler,
        "vocoder": vocoder,
        "image_projection": image_projection,
        "image_encoder": clip,
        "image_processor": clip_processor,
        "image_encoder_type": "clip" if image_encoder == "clip" else "none",
    }
