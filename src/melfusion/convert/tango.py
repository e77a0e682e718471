"""Load a TANGO music checkpoint folder into diffusers / transformers components.

TANGO (github.com/declare-lab/tango; weights e.g. ``declare-lab/tango-full-ft-audio-music-caps``) is
not in diffusers format. ``tango.py:Tango.__init__`` builds three modules from three JSON files and
loads three torch pickles into them, strictly:

- ``vae_config.json`` -> ``audioldm.variational_autoencoder.AutoencoderKL(**cfg)`` (ddconfig, embed_dim,
  subband, image_key, time_shuffle, scale_factor); ``pytorch_model_vae.bin`` is its state dict:
  ``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*`` and ``vocoder.*`` (the HiFi-GAN
  that ``get_vocoder`` builds inside the VAE).
- ``stft_config.json`` -> ``audioldm.audio.stft.TacotronSTFT(**cfg)`` (filter_length, hop_length,
  win_length, n_mel_channels, sampling_rate, mel_fmin, mel_fmax); ``pytorch_model_stft.bin``:
  ``mel_basis``, ``stft_fn.forward_basis``, ``stft_fn.inverse_basis``.
- ``main_config.json`` -> ``models.AudioDiffusion(**cfg)`` (text_encoder_name, scheduler_name,
  unet_model_name, unet_model_config_path, snr_gamma, ...); ``pytorch_model_main.bin``: ``unet.*`` (a
  diffusers UNet2DConditionModel) and ``text_encoder.*`` (a transformers T5EncoderModel).

Conversion (key names as the original modules produce them):

- ``unet.*`` -> diffusers ``UNet2DConditionModel`` unchanged (TANGO *is* a diffusers UNet; its config
  lives in the code repo, ``configs/diffusion_model_config.json``, which main_config.json names by a
  relative path; an embedded copy is used when the file is not next to the checkpoint).
- ``text_encoder.*`` -> transformers ``T5EncoderModel`` unchanged (TANGO trains or freezes FLAN-T5 and
  saves it inside the main checkpoint; config and tokenizer come from ``text_encoder_name``).
- AudioLDM VAE -> diffusers ``AutoencoderKL`` with the renames of diffusers'
  ``scripts/convert_original_audioldm_to_diffusers.py`` (``down.i.block.j`` -> ``down_blocks.i.resnets.j``,
  ``up.i`` -> ``up_blocks.(n-1-i)``, ``mid.attn_1.{q,k,v,proj_out}`` -> ``mid_block.attentions.0.{to_q,...}``
  with 1x1 convs squeezed to linears, ``nin_shortcut`` -> ``conv_shortcut``, ``norm_out`` -> ``conv_norm_out``).
- ``vocoder.*`` (AudioLDM's HiFi-GAN, weight norm already removed by ``get_vocoder``) -> transformers
  ``SpeechT5HifiGan`` (``ups.i`` -> ``upsampler.i``; ``mean``/``scale`` buffers set to 0/1, unused).
- STFT buffers are not converted: they are deterministic functions of stft_config.json (documented
  ignore list ``STFT_BUFFERS``); only their shapes are checked. stft_config becomes ``mel_config``.
- Scheduler: ``DDPMScheduler`` with the config of ``scheduler_name``'s ``scheduler/`` (TANGO: SD-2.1's,
  scaled_linear 0.00085-0.012, 1000 steps, v-prediction), embedded for the known SD repo names.
"""

from __future__ import annotations

import copy
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from melfusion.convert._common import (
    assign_state_dict,
    build_empty,
    finish_module,
    hub_offline,
    load_weights,
    read_json,
)
from melfusion.errors import MelfusionInputError

TANGO_CONFIG_FILES = ("main_config.json", "vae_config.json", "stft_config.json")
TANGO_WEIGHT_STEMS = ("pytorch_model_main", "pytorch_model_vae", "pytorch_model_stft")
EXPECTED_LAYOUT = (
    "main_config.json, vae_config.json, stft_config.json, "
    "pytorch_model_main.bin, pytorch_model_vae.bin, pytorch_model_stft.bin"
)

# TacotronSTFT buffers: recomputed from stft_config.json by the mel front end, so never converted.
STFT_BUFFERS = ("mel_basis", "stft_fn.forward_basis", "stft_fn.inverse_basis")

# declare-lab/tango configs/diffusion_model_config.json (FLAN-T5-large, 1024-d) and
# configs/diffusion_model_xl_config.json (FLAN-T5-XL, 2048-d). Not shipped in the HF weight repos.
_TANGO_UNET_BASE: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.10.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 8,
    "sample_size": [32, 2],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
    "upcast_attention": True,
}
TANGO_UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "diffusion_model_config.json": _TANGO_UNET_BASE,
    "diffusion_model_xl_config.json": {**_TANGO_UNET_BASE, "cross_attention_dim": 2048},
}

# scheduler/scheduler_config.json of the SD repos TANGO-family main_config.json files name
# (TANGO trains with DDPMScheduler.from_pretrained(scheduler_name, subfolder="scheduler")).
_SD_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
}
KNOWN_SCHEDULERS: dict[str, dict[str, Any]] = {
    "stabilityai/stable-diffusion-2-1": {**_SD_SCHEDULER, "prediction_type": "v_prediction"},
    "stabilityai/stable-diffusion-2": {**_SD_SCHEDULER, "prediction_type": "v_prediction"},
    "stabilityai/stable-diffusion-2-1-base": {**_SD_SCHEDULER, "prediction_type": "epsilon"},
    "stabilityai/stable-diffusion-2-base": {**_SD_SCHEDULER, "prediction_type": "epsilon"},
    "runwayml/stable-diffusion-v1-5": {**_SD_SCHEDULER, "prediction_type": "epsilon"},
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {**_SD_SCHEDULER, "prediction_type": "epsilon"},
    "CompVis/stable-diffusion-v1-4": {**_SD_SCHEDULER, "prediction_type": "epsilon"},
}

# audioldm/hifigan/utilities.py HIFIGAN_16K_64: get_vocoder() ignores its config argument and always
# builds this generator, so TANGO's vocoder has these hyper-parameters (the width and mel count are
# read back from the weights and checked).
AUDIOLDM_HIFIGAN: dict[str, Any] = {
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "upsample_initial_channel": 1024,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "num_mels": 64,
    "sampling_rate": 16000,
}

DEFAULT_TEXT_ENCODER = "google/flan-t5-large"
TANGO_MEL_FRAMES = 1024  # 10.24 s at hop 160 / 16 kHz: AudioLDM's target_length, TANGO's latent 256 x 16


# --------------------------------------------------------------------------------------------------
# folder and files
# --------------------------------------------------------------------------------------------------
def check_tango_dir(tango_dir: str | os.PathLike[str]) -> Path:
    """The folder as a Path, after checking it holds the six TANGO files (.safetensors may replace .bin)."""
    root = Path(tango_dir).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise MelfusionInputError(
            f"TANGO folder {root} {what}; pass a folder holding {EXPECTED_LAYOUT} "
            "(e.g. a download of declare-lab/tango-full-ft-audio-music-caps)"
        )
    for name in TANGO_CONFIG_FILES:
        if not (root / name).is_file():
            raise MelfusionInputError(f"{root} has no {name}; a TANGO folder holds {EXPECTED_LAYOUT}")
    for stem in TANGO_WEIGHT_STEMS:
        if not _weight_file(root, stem):
            raise MelfusionInputError(f"{root} has no {stem}.bin; a TANGO folder holds {EXPECTED_LAYOUT}")
    return root


def _weight_file(root: Path, stem: str) -> Path | None:
    for suffix in (".safetensors", ".bin"):  # safetensors preferred when both are there
        path = root / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _load_part(root: Path, stem: str) -> tuple[dict[str, torch.Tensor], str]:
    path = _weight_file(root, stem)
    assert path is not None  # checked by check_tango_dir
    return load_weights(path), path.name


# --------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------
def mel_config_from_stft_config(stft_config: dict[str, Any]) -> dict[str, Any]:
    """stft_config.json (TacotronSTFT arguments) -> melfusion.audio.mel.MelConfig fields."""
    names = (
        "filter_length",
        "hop_length",
        "win_length",
        "n_mel_channels",
        "sampling_rate",
        "mel_fmin",
        "mel_fmax",
    )
    missing = [n for n in names if n not in stft_config]
    if missing:
        raise MelfusionInputError(
            f"stft_config.json lacks {', '.join(missing)}; TANGO's holds the TacotronSTFT arguments {', '.join(names)}"
        )
    try:
        mel = {
            "sample_rate": int(stft_config["sampling_rate"]),
            "n_fft": int(stft_config["filter_length"]),
            "win_length": int(stft_config["win_length"]),
            "hop_length": int(stft_config["hop_length"]),
            "n_mels": int(stft_config["n_mel_channels"]),
            "fmin": float(stft_config["mel_fmin"]),
            "fmax": float(stft_config["mel_fmax"]),
            "center": True,  # TacotronSTFT reflect-pads n_fft // 2 on both sides
        }
    except (TypeError, ValueError) as err:
        raise MelfusionInputError(f"stft_config.json has a non-numeric value: {err}") from err
    try:
        from melfusion.audio.mel import MelConfig
    except ImportError:  # pragma: no cover - audio stack always present in a full install
        return mel
    try:
        MelConfig.from_dict(mel)
    except ValueError as err:
        raise MelfusionInputError(f"stft_config.json: {err}") from err
    return mel


def _resolve_unet_config(
    root: Path, main_config: dict[str, Any], unet_config: str | os.PathLike[str] | dict[str, Any] | None
) -> tuple[dict[str, Any], str]:
    """The UNet config dict and a description of where it came from."""
    if isinstance(unet_config, dict):
        return copy.deepcopy(unet_config), "the given unet_config"
    if unet_config is not None:
        path = Path(unet_config).expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise MelfusionInputError(
                f"UNet config {path} does not exist; pass a UNet2DConditionModel config.json"
            )
        return read_json(path), str(path)
    if main_config.get("unet_model_name") and not main_config.get("unet_model_config_path"):
        raise MelfusionInputError(
            f"{root / 'main_config.json'} builds its UNet from the pretrained {main_config['unet_model_name']!r} "
            "with group_in/group_out adapters; only TANGO checkpoints trained from a UNet config are supported"
        )
    rel = main_config.get("unet_model_config_path") or "configs/diffusion_model_config.json"
    rel_path = Path(rel)
    candidates = [rel_path] if rel_path.is_absolute() else [root / rel_path, root / rel_path.name]
    for path in candidates:
        if path.is_dir():
            path = path / "config.json"
        if path.is_file():
            return read_json(path), str(path)
    if rel_path.name in TANGO_UNET_CONFIGS:
        return copy.deepcopy(TANGO_UNET_CONFIGS[rel_path.name]), f"the built-in copy of TANGO's {rel}"
    raise MelfusionInputError(
        f"UNet config {rel!r} (main_config.json unet_model_config_path) is not in {root}; copy it there "
        "from the TANGO code repository or pass --unet-config"
    )


def _build_scheduler(root: Path, main_config: dict[str, Any]) -> Any:
    from diffusers import DDPMScheduler

    name = str(main_config.get("scheduler_name") or "stabilityai/stable-diffusion-2-1")
    local = Path(name).expanduser()
    if not local.is_absolute():
        local = root / local if (root / local).exists() else local
    if (local / "scheduler" / "scheduler_config.json").is_file():
        return DDPMScheduler.from_pretrained(str(local), subfolder="scheduler")
    if (local / "scheduler_config.json").is_file():
        return DDPMScheduler.from_pretrained(str(local))
    if name in KNOWN_SCHEDULERS:
        return DDPMScheduler(**KNOWN_SCHEDULERS[name])
    try:
        return DDPMScheduler.from_pretrained(name, subfolder="scheduler", local_files_only=hub_offline())
    except Exception as err:
        raise MelfusionInputError(
            f"main_config.json scheduler_name {name!r} is neither a known Stable Diffusion repo nor a cached or "
            f"local folder with scheduler/scheduler_config.json ({type(err).__name__}); download it or fix the name"
        ) from err


# --------------------------------------------------------------------------------------------------
# AudioLDM VAE + HiFi-GAN -> diffusers AutoencoderKL + transformers SpeechT5HifiGan
# --------------------------------------------------------------------------------------------------
def audioldm_vae_config_to_diffusers(vae_config: dict[str, Any]) -> dict[str, Any]:
    """vae_config.json (audioldm AutoencoderKL arguments) -> diffusers AutoencoderKL config."""
    dd = vae_config.get("ddconfig")
    if not isinstance(dd, dict):
        raise MelfusionInputError(
            "vae_config.json has no 'ddconfig' object; it is not an AudioLDM VAE config"
        )
    need = ("ch", "ch_mult", "num_res_blocks", "z_channels", "in_channels", "out_ch")
    missing = [k for k in need if k not in dd]
    if missing:
        raise MelfusionInputError(f"vae_config.json ddconfig lacks {', '.join(missing)}")
    z = int(dd["z_channels"])
    unsupported = []
    if dd.get("attn_resolutions"):
        unsupported.append("attn_resolutions (attention outside the mid block)")
    if dd.get("downsample_time_stride4_levels"):
        unsupported.append("downsample_time_stride4_levels")
    if dd.get("attn_type", "vanilla") != "vanilla" or dd.get("use_linear_attn"):
        unsupported.append("non-vanilla attention")
    if not dd.get("double_z", True):
        unsupported.append("double_z=false")
    if int(vae_config.get("subband", 1)) != 1:
        unsupported.append("subband > 1")
    if int(vae_config.get("embed_dim", z)) != z:
        unsupported.append("embed_dim != z_channels")
    if unsupported:
        raise MelfusionInputError(
            f"vae_config.json uses {', '.join(unsupported)}, which diffusers' AutoencoderKL cannot express"
        )
    n = len(dd["ch_mult"])
    if "scale_factor" not in vae_config:
        warnings.warn(
            "vae_config.json has no scale_factor; TANGO then decodes with 1.0 (AudioLDM-S uses 0.9228)",
            stacklevel=3,
        )
    return {
        "in_channels": int(dd["in_channels"]),
        "out_channels": int(dd["out_ch"]),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": [int(dd["ch"]) * int(m) for m in dd["ch_mult"]],
        "layers_per_block": int(dd["num_res_blocks"]),
        "latent_channels": z,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": int(dd.get("resolution", 256)),
        "scaling_factor": float(vae_config.get("scale_factor", 1.0)),
    }


_VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_VAE_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "norm_out": "conv_norm_out"}


def _vae_key(key: str, num_levels: int) -> str | None:
    """One AudioLDM VAE key -> its diffusers AutoencoderKL key (None when it has no counterpart)."""
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(.+)\.(weight|bias)", key)
    if not m:
        return None
    part, body, p = m.groups()
    if body in _VAE_TOP:
        return f"{part}.{_VAE_TOP[body]}.{p}"
    if r := re.fullmatch(r"(down|up)\.(\d+)\.block\.(\d+)\.(\w+)", body):
        kind, level, j, layer = r.groups()
        if layer not in _VAE_RESNET or (kind == "down") != (part == "encoder"):
            return None
        # AudioLDM's decoder stores its levels bottom-up (up.0 = highest resolution); diffusers top-down.
        block = int(level) if kind == "down" else num_levels - 1 - int(level)
        return f"{part}.{kind}_blocks.{block}.resnets.{j}.{_VAE_RESNET[layer]}.{p}"
    if part == "encoder" and (r := re.fullmatch(r"down\.(\d+)\.downsample\.conv", body)):
        return f"encoder.down_blocks.{r.group(1)}.downsamplers.0.conv.{p}"
    if part == "decoder" and (r := re.fullmatch(r"up\.(\d+)\.upsample\.conv", body)):
        return f"decoder.up_blocks.{num_levels - 1 - int(r.group(1))}.upsamplers.0.conv.{p}"
    if (r := re.fullmatch(r"mid\.block_([12])\.(\w+)", body)) and r.group(2) in _VAE_RESNET:
        return f"{part}.mid_block.resnets.{int(r.group(1)) - 1}.{_VAE_RESNET[r.group(2)]}.{p}"
    if (r := re.fullmatch(r"mid\.attn_1\.(\w+)", body)) and r.group(1) in _VAE_ATTN:
        return f"{part}.mid_block.attentions.0.{_VAE_ATTN[r.group(1)]}.{p}"
    return None


def fuse_weight_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace ``x.weight_g`` / ``x.weight_v`` pairs (torch weight_norm, dim=0) by ``x.weight``."""
    out = dict(state_dict)
    for key_g in [k for k in state_dict if k.endswith(".weight_g")]:
        stem = key_g[: -len("_g")]
        key_v = stem + "_v"
        if key_v not in state_dict:
            continue
        g, v = out.pop(key_g), out.pop(key_v)
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
        out[stem] = v * (g / norm)
    return out


def convert_audioldm_vae_state_dict(
    state_dict: dict[str, torch.Tensor], num_levels: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """Split an AudioLDM ``AutoencoderKL.state_dict()`` into (diffusers VAE, HiFi-GAN, unmapped keys)."""
    vae: dict[str, torch.Tensor] = {}
    vocoder: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        if key.startswith("vocoder."):
            vocoder[key[len("vocoder.") :]] = value
            continue
        new = _vae_key(key, num_levels)
        if new is None:
            unmapped.append(key)
            continue
        if ".mid_block.attentions.0.to_" in new and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]  # 1x1 conv -> linear, (C, C, 1, 1) -> (C, C)
        vae[new] = value
    return vae, fuse_weight_norm(vocoder), unmapped


def convert_audioldm_hifigan_state_dict(vocoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AudioLDM HiFi-GAN ``Generator`` keys -> transformers ``SpeechT5HifiGan`` keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in vocoder.items():
        m = re.fullmatch(r"ups\.(\d+)\.(weight|bias)", key)
        out[f"upsampler.{m.group(1)}.{m.group(2)}" if m else key] = value
    return out


def hifigan_config_from_weights(
    vocoder: dict[str, torch.Tensor], *, n_mels: int, sampling_rate: int, hop_length: int, source: str
) -> dict[str, Any]:
    """SpeechT5HifiGanConfig kwargs for AudioLDM's HiFi-GAN, checked against the weights' shapes."""
    pre = vocoder.get("conv_pre.weight")
    if pre is None or pre.ndim != 3:
        raise MelfusionInputError(
            f"{source}: no vocoder.conv_pre.weight; TANGO's VAE file embeds a HiFi-GAN vocoder"
        )
    width, mels = int(pre.shape[0]), int(pre.shape[1])
    ups = sorted(int(m.group(1)) for k in vocoder if (m := re.fullmatch(r"ups\.(\d+)\.weight", k)))
    kernels = [int(vocoder[f"ups.{i}.weight"].shape[2]) for i in ups]
    n_res = len(AUDIOLDM_HIFIGAN["resblock_kernel_sizes"])
    res_kernels = [
        int(vocoder[f"resblocks.{j}.convs1.0.weight"].shape[2])
        for j in range(n_res)
        if f"resblocks.{j}.convs1.0.weight" in vocoder
    ]
    if (
        kernels != AUDIOLDM_HIFIGAN["upsample_kernel_sizes"]
        or res_kernels != AUDIOLDM_HIFIGAN["resblock_kernel_sizes"]
    ):
        raise MelfusionInputError(
            f"{source}: vocoder upsample kernels {kernels} / resblock kernels {res_kernels} are not AudioLDM's "
            f"HiFi-GAN ({AUDIOLDM_HIFIGAN['upsample_kernel_sizes']} / {AUDIOLDM_HIFIGAN['resblock_kernel_sizes']}); "
            "other vocoders are not supported"
        )
    if mels != n_mels:
        raise MelfusionInputError(
            f"{source}: the vocoder takes {mels} mel bands but stft_config.json has n_mel_channels={n_mels}"
        )
    if math.prod(AUDIOLDM_HIFIGAN["upsample_rates"]) != hop_length:
        raise MelfusionInputError(
            f"stft_config.json hop_length={hop_length}, but AudioLDM's HiFi-GAN makes "
            f"{math.prod(AUDIOLDM_HIFIGAN['upsample_rates'])} samples per mel frame"
        )
    return {
        "model_in_dim": mels,
        "sampling_rate": int(sampling_rate),
        "upsample_initial_channel": width,
        "upsample_rates": list(AUDIOLDM_HIFIGAN["upsample_rates"]),
        "upsample_kernel_sizes": kernels,
        "resblock_kernel_sizes": res_kernels,
        "resblock_dilation_sizes": [list(d) for d in AUDIOLDM_HIFIGAN["resblock_dilation_sizes"]],
        "leaky_relu_slope": 0.1,
        "normalize_before": False,
    }


def _check_stft_buffers(stft: dict[str, torch.Tensor], mel: dict[str, Any], source: str) -> None:
    extra = sorted(set(stft) - set(STFT_BUFFERS))
    lacking = sorted(set(STFT_BUFFERS) - set(stft))
    if extra or lacking:
        raise MelfusionInputError(
            f"{source}: expected exactly the TacotronSTFT buffers {', '.join(STFT_BUFFERS)}; "
            f"missing {lacking or 'none'}, unexpected {extra[:3] or 'none'}"
        )
    n_freq = mel["n_fft"] // 2 + 1
    want = {
        "mel_basis": (mel["n_mels"], n_freq),
        "stft_fn.forward_basis": (2 * n_freq, 1, mel["n_fft"]),
        "stft_fn.inverse_basis": (2 * n_freq, 1, mel["n_fft"]),
    }
    for key, shape in want.items():
        if tuple(stft[key].shape) != shape:
            raise MelfusionInputError(
                f"{source}: {key} has shape {tuple(stft[key].shape)}, stft_config.json implies {shape}"
            )


# --------------------------------------------------------------------------------------------------
# text encoder
# --------------------------------------------------------------------------------------------------
def _text_encoder_and_tokenizer(
    name: str, weights: dict[str, torch.Tensor], source: str, cross_attention_dim: int
) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer, T5EncoderModel

    offline = hub_offline()
    hint = (
        "it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"
        if offline
        else "download it or pass --text-encoder DIR"
    )
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=offline)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline)
    except (OSError, ValueError) as err:
        raise MelfusionInputError(
            f"cannot load the T5 config/tokenizer {name!r} ({hint}); pass --text-encoder pointing at a "
            "local FLAN-T5 folder (config.json + tokenizer files)"
        ) from err
    if getattr(config, "model_type", None) not in ("t5", "mt5", "umt5"):
        raise MelfusionInputError(f"text encoder {name!r} is a {config.model_type!r} model, TANGO uses T5")
    if int(config.d_model) != int(cross_attention_dim):
        raise MelfusionInputError(
            f"text encoder {name!r} is {config.d_model}-d but the UNet cross-attends to "
            f"{cross_attention_dim}-d states; pass the T5 the checkpoint was trained with"
        )
    if weights:
        model = build_empty(lambda: T5EncoderModel(config))
        expected = model.state_dict()
        weights = dict(weights)
        # shared.weight and encoder.embed_tokens.weight are one tied tensor; accept either spelling.
        for a, b in (
            ("shared.weight", "encoder.embed_tokens.weight"),
            ("encoder.embed_tokens.weight", "shared.weight"),
        ):
            if a in expected and a not in weights and b in weights:
                weights[a] = weights[b]
        assign_state_dict(model, weights, what="text encoder (text_encoder.*)", source=source)
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    else:
        try:
            model = T5EncoderModel.from_pretrained(name, local_files_only=offline)
        except (OSError, ValueError) as err:
            raise MelfusionInputError(
                f"{source} holds no text_encoder.* weights and {name!r} cannot be loaded ({hint})"
            ) from err
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------
def load_tango_music_components(
    tango_dir: str | os.PathLike[str],
    *,
    text_encoder: str | os.PathLike[str] | None = None,
    unet_config: str | os.PathLike[str] | dict[str, Any] | None = None,
    torch_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Load a TANGO folder as the music half of a MeLFusion pipeline.

    Args:
        tango_dir: folder with ``{main,vae,stft}_config.json`` + ``pytorch_model_{main,vae,stft}.bin``
            (a ``.safetensors`` with the same stem is used instead of the ``.bin`` when present).
        text_encoder: where the T5 config and tokenizer come from (path or hub id). Default: main_config's
            ``text_encoder_name`` (``google/flan-t5-large`` for TANGO). The weights come from the
            checkpoint's ``text_encoder.*`` part; only when it has none are they loaded from here.
        unet_config: UNet2DConditionModel config (dict, JSON file or folder) overriding the one main_config
            names; by default that file is looked up in ``tango_dir`` and else the built-in TANGO copy is used.
        torch_dtype: dtype of the returned modules (default float32).

    Returns:
        ``{"unet", "vae", "vocoder", "scheduler", "text_encoder", "tokenizer", "mel_config"}``: diffusers
        ``UNet2DConditionModel``, diffusers ``AutoencoderKL`` (1 -> 1 channel, mel (B, 1, T, n_mels) <->
        latent (B, 8, T/4, n_mels/4), ``scaling_factor`` from vae_config.json), transformers
        ``SpeechT5HifiGan``, diffusers ``DDPMScheduler``, transformers ``T5EncoderModel`` and tokenizer,
        and a dict of ``melfusion.audio.mel.MelConfig`` fields.

    Raises:
        MelfusionInputError: a missing file, a config the diffusers classes cannot express, or weights that
            do not match (every missing/unexpected key is an error except the documented STFT buffers).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    root = check_tango_dir(tango_dir)
    main_config = read_json(root / "main_config.json")
    vae_config = read_json(root / "vae_config.json")
    stft_config = read_json(root / "stft_config.json")
    mel_config = mel_config_from_stft_config(stft_config)

    # -- main: unet.* + text_encoder.* ----------------------------------------------------------------
    main, main_name = _load_part(root, "pytorch_model_main")
    unet_sd = {k[len("unet.") :]: v for k, v in main.items() if k.startswith("unet.")}
    text_sd = {k[len("text_encoder.") :]: v for k, v in main.items() if k.startswith("text_encoder.")}
    other = [k for k in main if not k.startswith(("unet.", "text_encoder."))]
    if any(k.startswith(("group_in.", "group_out.")) for k in other):
        raise MelfusionInputError(
            f"{main_name} has group_in/group_out adapters (a TANGO UNet initialised from a 4-channel Stable "
            "Diffusion UNet); only TANGO checkpoints trained from a UNet config are supported"
        )
    if other:
        raise MelfusionInputError(
            f"{main_name} has {len(other)} keys outside unet.*/text_encoder.* (e.g. {sorted(other)[0]}); "
            "it is not a TANGO AudioDiffusion state dict"
        )
    if not unet_sd:
        raise MelfusionInputError(
            f"{main_name} has no unet.* weights; it is not a TANGO AudioDiffusion state dict"
        )

    config, config_source = _resolve_unet_config(root, main_config, unet_config)
    try:
        unet = build_empty(lambda: UNet2DConditionModel.from_config(config))
    except (TypeError, ValueError, KeyError) as err:
        raise MelfusionInputError(f"UNet config from {config_source} is invalid: {err}") from err
    assign_state_dict(unet, unet_sd, what=f"UNet (unet.*, config from {config_source})", source=main_name)
    del main, unet_sd

    name = str(text_encoder) if text_encoder is not None else str(main_config.get("text_encoder_name") or "")
    name = name or DEFAULT_TEXT_ENCODER
    text_model, tokenizer = _text_encoder_and_tokenizer(
        name, text_sd, main_name, unet.config.cross_attention_dim
    )
    del text_sd

    # -- VAE + vocoder ----------------------------------------------------------------------------------
    try:
        vae_kwargs = audioldm_vae_config_to_diffusers(vae_config)
    except MelfusionInputError:
        raise
    except (TypeError, ValueError) as err:
        raise MelfusionInputError(f"vae_config.json has an invalid value: {err}") from err
    vae_raw, vae_name = _load_part(root, "pytorch_model_vae")
    vae_sd, vocoder_raw, unmapped = convert_audioldm_vae_state_dict(
        vae_raw, len(vae_kwargs["block_out_channels"])
    )
    del vae_raw
    if unmapped:
        raise MelfusionInputError(
            f"{vae_name}: {len(unmapped)} keys have no diffusers AutoencoderKL counterpart "
            f"(e.g. {', '.join(sorted(unmapped)[:3])}); it is not an AudioLDM VAE state dict"
        )
    vae = build_empty(lambda: AutoencoderKL(**vae_kwargs))
    assign_state_dict(vae, vae_sd, what="VAE (encoder/decoder/quant_conv)", source=vae_name)

    # TANGO's UNet config carries a leftover sample_size [32, 2]; its inference hard-codes the latent
    # (256, 16) = (1024 frames, 64 mels) / VAE factor 4 (models.py prepare_latents). Record that.
    factor = 2 ** (len(vae_kwargs["block_out_channels"]) - 1)
    unet.register_to_config(sample_size=[TANGO_MEL_FRAMES // factor, mel_config["n_mels"] // factor])

    hifigan_kwargs = hifigan_config_from_weights(
        vocoder_raw,
        n_mels=mel_config["n_mels"],
        sampling_rate=mel_config["sample_rate"],
        hop_length=mel_config["hop_length"],
        source=vae_name,
    )
    vocoder_sd = convert_audioldm_hifigan_state_dict(vocoder_raw)
    vocoder_sd["mean"] = torch.zeros(hifigan_kwargs["model_in_dim"])  # unused: normalize_before=False
    vocoder_sd["scale"] = torch.ones(hifigan_kwargs["model_in_dim"])
    vocoder = build_empty(lambda: SpeechT5HifiGan(SpeechT5HifiGanConfig(**hifigan_kwargs)))
    assign_state_dict(vocoder, vocoder_sd, what="vocoder (vocoder.*)", source=vae_name)

    # -- STFT: shapes only (documented ignore list) ------------------------------------------------------
    stft_sd, stft_name = _load_part(root, "pytorch_model_stft")
    _check_stft_buffers(stft_sd, mel_config, stft_name)

    return {
        "unet": finish_module(unet, torch_dtype),
        "vae": finish_module(vae, torch_dtype),
        "vocoder": finish_module(vocoder, torch_dtype),
        "scheduler": _build_scheduler(root, main_config),
        "text_encoder": finish_module(text_model, torch_dtype),
        "tokenizer": tokenizer,
        "mel_config": mel_config,
    }
