"""Art2Mus (ECCV-W 2024): artwork (and/or text) → music on AudioLDM 2, through a trained image projection.

Lazy exports, so `melfusion.pipelines.art2mus.constants` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Art2MusPipeline": "melfusion.pipelines.art2mus.pipeline_art2mus",
    "Art2MusPipelineOutput": "melfusion.pipelines.art2mus.pipeline_art2mus",
    "ImageProjectionLayer": "melfusion.pipelines.art2mus.projection",
    "ClipImageEncoder": "melfusion.pipelines.art2mus.image_encoders",
    "ImageBindImageEncoder": "melfusion.pipelines.art2mus.image_encoders",
    "ImageEncoder": "melfusion.pipelines.art2mus.image_encoders",
    "build_tiny_art2mus_components": "melfusion.pipelines.art2mus.tiny",
    "tiny_tokenizers": "melfusion.pipelines.art2mus.tiny",
    "SUPPORT_PROMPT": "melfusion.pipelines.art2mus.constants",
    "NEGATIVE_PROMPT": "melfusion.pipelines.art2mus.constants",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'melfusion.pipelines.art2mus' has no attribute {name!r}")
