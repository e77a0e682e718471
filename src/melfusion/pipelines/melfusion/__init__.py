from melfusion.pipelines.melfusion.pipeline_melfusion import MeLFusionPipeline, MeLFusionPipelineOutput

__all__ = ["MeLFusionPipeline", "MeLFusionPipelineOutput"]
