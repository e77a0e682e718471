"""The embedded default model used by `melfusion generate` when no --model is given."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

EMBEDDED_NAME = "embedded:melfusion-tiny"


def embedded_model_dir() -> Path | None:
    """Folder of the shipped trained weights, if this build carries them."""
    folder = Path(str(resources.files("melfusion"))) / "assets" / "default"
    return folder if (folder / "model_index.json").is_file() else None


def load_embedded_pipeline() -> tuple[Any, str]:
    """(pipeline, name). Shipped trained weights when present; otherwise the tiny model built in code with
    random UNet/VAE weights (seed 0) around the pretrained MiniLM text encoder — it makes noise, not music."""
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    folder = embedded_model_dir()
    if folder is not None:
        return MeLFusionPipeline.from_pretrained(folder, local_files_only=True), f"{EMBEDDED_NAME} ({folder})"
    from melfusion.models.tiny import build_default_pipeline

    return build_default_pipeline(
        seed=0
    ), f"{EMBEDDED_NAME}-random-init (seed 0, untrained: noise, not music)"
