"""melfusion: music from an image plus a text prompt (MeLFusion, Art2Mus).

Pipeline components are importable from the top-level package, where diffusers'
``DiffusionPipeline.from_pretrained`` looks classes up. They load lazily, so ``import melfusion`` (and the
CLI's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VisualSynapse": "melfusion.models.synapse",
    "GriffinLimVocoder": "melfusion.models.vocoder",
    "MeLFusionPipeline": "melfusion.pipelines.melfusion",
    "MeLFusionPipelineOutput": "melfusion.pipelines.melfusion",
    "Art2MusPipeline": "melfusion.pipelines.art2mus",
    "ImageProjectionLayer": "melfusion.pipelines.art2mus",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'melfusion' has no attribute {name!r}")
