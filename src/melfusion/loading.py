"""Model folders → pipelines: the one loading path of the commands, trainers, app and benchmarks.

    pipe, name = load_pipeline(None, "cpu")           # the embedded default model
    pipe, name = load_pipeline("./melfusion-tango", "cuda")  # any MeLFusion or Art2Mus folder

Layer: above pipelines (it builds them), below training / evaluation / commands (they call it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from melfusion.errors import MelfusionInputError
from melfusion.utils.devices import resolve_device

PIPELINE_CLASSES = ("MeLFusionPipeline", "Art2MusPipeline")
SCHEDULERS = ("ddim", "ddpm", "dpmsolver++")
EMBEDDED_NAME = "embedded:melfusion-tiny"

__all__ = [
    "PIPELINE_CLASSES",
    "SCHEDULERS",
    "check_model_folder",
    "is_art2mus",
    "load_embedded_pipeline",
    "load_pipeline",
    "load_pipeline_folder",
    "pipeline_class_name",
    "resolve_device",
    "set_scheduler",
]


def pipeline_class_name(folder: str | os.PathLike) -> str | None:
    """``_class_name`` of a folder's model_index.json (None when there is none or it is unreadable)."""
    try:
        return json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


def check_model_folder(path: str | os.PathLike) -> None:
    """A one-line MelfusionInputError unless ``path`` is a MeLFusion or Art2Mus pipeline folder."""
    p = Path(path)
    if not p.is_dir():
        raise MelfusionInputError(f"model folder not found: {p} (give a folder written by save_pretrained)")
    index = p / "model_index.json"
    if not index.is_file():
        raise MelfusionInputError(
            f"{p} is not a melfusion model folder: no model_index.json (convert a checkpoint with "
            "'melfusion convert' or save one with MeLFusionPipeline.save_pretrained)"
        )
    try:
        info = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: JSON and UTF-8 decoding errors
        raise MelfusionInputError(f"{index} is unreadable or not JSON ({err}); re-save the model") from None
    if not isinstance(info, dict):
        raise MelfusionInputError(
            f"{index} holds a JSON {type(info).__name__}, not an object; re-save the model with "
            "MeLFusionPipeline.save_pretrained"
        )
    name = info.get("_class_name")
    if name == "AudioLDM2Pipeline":
        raise MelfusionInputError(
            f"{p} is a plain AudioLDM 2, with no image projection; train Art2Mus on it first "
            "(melfusion train --config configs/art2mus.yaml model.pretrained=...)"
        )
    if name not in PIPELINE_CLASSES:
        raise MelfusionInputError(f"{p} holds a {name!r} pipeline, not a MeLFusion or Art2Mus pipeline")


def load_pipeline_folder(folder: str | os.PathLike[str]) -> Any:
    """Any MeLFusionPipeline folder, packed (``pack_embedded``: MiniLM from its package, float32) or a full
    ``save_pretrained`` one: ``MeLFusionPipeline.from_pretrained`` tells them apart."""
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    return MeLFusionPipeline.from_pretrained(folder, local_files_only=True)


def load_embedded_pipeline() -> tuple[Any, str]:
    """(pipeline, name). The shipped trained weights when this build has them; otherwise the tiny model built
    in code with random UNet/VAE weights (seed 0) around the pretrained MiniLM — it makes noise, not music."""
    from melfusion.models.embedded import embedded_model_dir

    folder = embedded_model_dir()
    if folder is not None:
        info_file = folder / "embedded.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        return load_pipeline_folder(folder), f"{EMBEDDED_NAME} ({info.get('version', 'trained')})"
    from melfusion.models.tiny import build_tiny_components
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    pipe = MeLFusionPipeline(**build_tiny_components(pretrained_text_encoder=True, seed=0))
    return pipe, f"{EMBEDDED_NAME}-random-init (seed 0, untrained: noise, not music)"


def load_pipeline(model: str | os.PathLike | None, device: str = "cpu") -> tuple[Any, str]:
    """(pipeline on ``device``, the model's name for sidecars). ``model=None`` → the embedded default; a folder
    holds a MeLFusionPipeline (packed folders too) or an Art2MusPipeline."""
    if model is None:
        pipe, name = load_embedded_pipeline()
        return pipe.to(device), name
    check_model_folder(model)
    try:
        if pipeline_class_name(model) == "Art2MusPipeline":
            from melfusion.pipelines.art2mus import Art2MusPipeline

            pipe = Art2MusPipeline.from_pretrained(model)
        else:
            pipe = load_pipeline_folder(model)
    except (OSError, ValueError, KeyError) as err:
        raise MelfusionInputError(
            f"could not load the model folder {model}: {str(err).splitlines()[0]}"
        ) from None
    return pipe.to(device), str(Path(model).resolve())


def is_art2mus(pipe: Any) -> bool:
    return type(pipe).__name__ == "Art2MusPipeline"


def set_scheduler(pipe: Any, name: str | None) -> None:
    """Swap the pipeline's sampler (``ddim``, ``ddpm``, ``dpmsolver++``), keeping its noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if name is None:
        return
    if name not in SCHEDULERS:
        raise MelfusionInputError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "dpmsolver++": DPMSolverMultistepScheduler}[name]
    extra = {"algorithm_type": "dpmsolver++"} if name == "dpmsolver++" else {}
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
