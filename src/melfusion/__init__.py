"""melfusion: music from an image plus a text prompt (MeLFusion, Art2Mus).

Pipeline components defined here are importable from the top-level package, which is where diffusers'
``DiffusionPipeline.from_pretrained`` looks them up (``model_index.json`` names the library ``melfusion``).
"""

__version__ = "0.1.0"

from melfusion.models.synapse import VisualSynapse  # noqa: E402
from melfusion.models.vocoder import GriffinLimVocoder  # noqa: E402
from melfusion.pipelines.melfusion import MeLFusionPipeline, MeLFusionPipelineOutput  # noqa: E402

__all__ = [
    "GriffinLimVocoder",
    "MeLFusionPipeline",
    "MeLFusionPipelineOutput",
    "VisualSynapse",
    "__version__",
]
