"""Feature extractors for the metrics, one file each; real checkpoints or tiny random versions for tests.

| name      | used by                  | input                         | output per item                      |
|-----------|--------------------------|-------------------------------|--------------------------------------|
| vggish    | FAD, FAD∞                | 16 kHz audio                  | (n_frames, 128) pre-activation       |
| panns     | FD, KL, IS               | 16 kHz audio                  | (2048,) embedding, (527,) logits     |
| clap      | CLAP score, IMSM         | 48 kHz audio, text            | (512,) normalised                    |
| clip      | IMSM                     | RGB image, text               | (512,) normalised                    |
| imagebind | IBSc                     | audio / image files           | (1024,)                              |
"""

from __future__ import annotations

import os
from typing import Any

from melfusion.encoders.base import MissingWeightsError
from melfusion.encoders.clip import CLIP_DEFAULT, ClipEmbedder
from melfusion.encoders.imagebind import ImageBindEmbedder, imagebind_available
from melfusion.errors import MelfusionInputError
from melfusion.evaluation.embedders.clap import CLAP_DEFAULT, ClapEmbedder
from melfusion.evaluation.embedders.panns import Cnn14, Cnn14Config, PANNsEmbedder
from melfusion.evaluation.embedders.vggish import VGGish, VGGishConfig, VGGishEmbedder

EMBEDDER_NAMES = ("vggish", "panns", "clap", "clip", "imagebind")


def build_embedder(
    name: str,
    *,
    tiny: bool = False,
    weights_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    allow_download: bool = False,
    clap_model: str = CLAP_DEFAULT,
    clip_model: str = CLIP_DEFAULT,
    batch_size: int | None = None,
    seed: int = 0,
) -> Any:
    """Build one embedder by name: the real checkpoint (`tiny=False`) or a tiny random one."""
    kw: dict[str, Any] = {"device": device}
    if batch_size is not None:
        kw["batch_size"] = batch_size
    if name not in EMBEDDER_NAMES:
        raise MelfusionInputError(f"unknown embedder {name!r}; choose from {', '.join(EMBEDDER_NAMES)}")
    if tiny:
        if name == "imagebind":
            raise MelfusionInputError(
                "there is no tiny ImageBind: IBSc needs the real model (drop --tiny-embedders)"
            )
        cls = {"vggish": VGGishEmbedder, "panns": PANNsEmbedder, "clap": ClapEmbedder, "clip": ClipEmbedder}[
            name
        ]
        return cls.tiny(seed=seed, **kw)
    kw["allow_download"] = allow_download
    if name == "vggish":
        return VGGishEmbedder.from_pretrained(weights_dir, **kw)
    if name == "panns":
        return PANNsEmbedder.from_pretrained(weights_dir, **kw)
    if name == "clap":
        return ClapEmbedder.from_pretrained(clap_model, weights_dir, **kw)
    if name == "clip":
        return ClipEmbedder.from_pretrained(clip_model, weights_dir, **kw)
    return ImageBindEmbedder.from_pretrained(weights_dir, **kw)


__all__ = [
    "CLAP_DEFAULT",
    "CLIP_DEFAULT",
    "EMBEDDER_NAMES",
    "ClapEmbedder",
    "ClipEmbedder",
    "Cnn14",
    "Cnn14Config",
    "ImageBindEmbedder",
    "MissingWeightsError",
    "PANNsEmbedder",
    "VGGish",
    "VGGishConfig",
    "VGGishEmbedder",
    "build_embedder",
    "imagebind_available",
]
