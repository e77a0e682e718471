"""Load a diffusers-layout Stable Diffusion folder (1.5 or 2.1) as MeLFusion's frozen image LDM.

A diffusers Stable Diffusion folder (what ``StableDiffusionPipeline.save_pretrained`` writes and what the
hub repos ``stabilityai/stable-diffusion-2-1`` / ``stable-diffusion-v1-5/stable-diffusion-v1-5`` hold) is
``model_index.json`` plus one subfolder per component. MeLFusion needs five of them: ``unet/``, ``vae/``,
``scheduler/``, ``text_encoder/`` (CLIP, for the null prompt of the inversion) and ``tokenizer/``.
The safety checker and feature extractor are not used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from melfusion.convert._common import finish_module, hub_offline, read_json
from melfusion.errors import MelfusionInputError

SD_COMPONENTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
_LAYOUT = "model_index.json + unet/ vae/ scheduler/ text_encoder/ tokenizer/ (diffusers format)"


def _resolve(path_or_repo: str | os.PathLike[str]) -> tuple[str, Path, bool]:
    """(source passed to from_pretrained, local path of model_index.json, is_local)."""
    text = os.fspath(path_or_repo)
    path = Path(text).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise MelfusionInputError(
                f"{path} has no model_index.json; the image LDM must be a Stable Diffusion folder with {_LAYOUT}"
            )
        return str(path), index, True
    if path.exists():
        raise MelfusionInputError(
            f"{path} is a file; pass a Stable Diffusion folder with {_LAYOUT} (single-file .ckpt/.safetensors "
            "checkpoints: convert them first with diffusers' StableDiffusionPipeline.from_single_file)"
        )
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text) or text.startswith("."):
        raise MelfusionInputError(
            f"image LDM {text!r} does not exist; pass a local Stable Diffusion folder ({_LAYOUT}) or a hub id "
            "such as stabilityai/stable-diffusion-2-1"
        )
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    try:
        index = hf_hub_download(text, "model_index.json", local_files_only=offline)
    except Exception as err:  # hub errors have many types (offline, 404, gated, network)
        why = (
            "it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"
            if offline
            else type(err).__name__
        )
        raise MelfusionInputError(
            f"cannot fetch {text}/model_index.json ({why}); download the model or pass a local folder"
        ) from err
    return text, Path(index), False


def check_stable_diffusion(path_or_repo: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that ``path_or_repo`` is a diffusers Stable Diffusion folder; return its model_index.json."""
    return _check(path_or_repo)[1]


def _check(path_or_repo: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    source, index_path, local = _resolve(path_or_repo)
    index = read_json(index_path)
    missing = [c for c in SD_COMPONENTS if not isinstance(index.get(c), list) or index[c][0] is None]
    if missing:
        raise MelfusionInputError(
            f"{index_path} lists no {', '.join(missing)}; the image LDM must be a Stable Diffusion folder with {_LAYOUT}"
        )
    if local:
        absent = [c for c in SD_COMPONENTS if not (Path(source) / c).is_dir()]
        if absent:
            raise MelfusionInputError(
                f"{source} lacks the subfolder(s) {', '.join(c + '/' for c in absent)}; "
                f"a Stable Diffusion folder holds {_LAYOUT}"
            )
    unet_class = index["unet"][1]
    if unet_class != "UNet2DConditionModel":
        raise MelfusionInputError(
            f"{source} has a {unet_class} UNet; MeLFusion needs a UNet2DConditionModel (Stable Diffusion 1.x/2.x)"
        )
    return source, index


def load_image_ldm_components(
    path_or_repo: str | os.PathLike[str], *, torch_dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Load the frozen image LDM of MeLFusion from a diffusers Stable Diffusion folder or hub id.

    Returns ``{"image_unet", "image_vae", "image_scheduler", "image_text_encoder", "image_tokenizer"}``:
    ``UNet2DConditionModel``, ``AutoencoderKL``, a ``DDIMScheduler`` built from the folder's scheduler
    config (whatever its class; ``clip_sample`` forced off and ``steps_offset`` 1, as diffusers'
    StableDiffusionPipeline does for latent DDIM), ``CLIPTextModel`` and the CLIP tokenizer.
    Hub ids are read with ``local_files_only`` when HF_HUB_OFFLINE=1. Modules are float32 unless
    ``torch_dtype`` is given, in eval mode.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    source, _ = _check(path_or_repo)
    offline = hub_offline()
    kwargs = {"local_files_only": offline}

    def load(what: str, fn: Any) -> Any:
        try:
            return fn()
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MelfusionInputError(f"cannot load {what} from {source}: {first}") from err

    unet = load("unet/", lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kwargs))
    vae = load("vae/", lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", **kwargs))
    scheduler_config = load(
        "scheduler/", lambda: DDIMScheduler.load_config(source, subfolder="scheduler", **kwargs)
    )
    scheduler_config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    scheduler_config.update(clip_sample=False, steps_offset=1)
    scheduler = DDIMScheduler.from_config(scheduler_config)
    text_encoder = load(
        "text_encoder/", lambda: CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
    )
    tokenizer = load(
        "tokenizer/", lambda: AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
    )
    return {
        "image_unet": finish_module(unet, torch_dtype),
        "image_vae": finish_module(vae, torch_dtype),
        "image_scheduler": scheduler,
        "image_text_encoder": finish_module(text_encoder, torch_dtype),
        "image_tokenizer": tokenizer,
    }
