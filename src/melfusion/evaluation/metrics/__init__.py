"""Pure metric maths on arrays (numpy in, numbers out) and update/compute metric objects."""

from melfusion.evaluation.metrics.frechet import (
    FADInfResult,
    FrechetResult,
    embedding_statistics,
    fad_infinity,
    frechet_distance,
    frechet_distance_details,
    frechet_distance_from_embeddings,
    trace_sqrt_product,
)
from melfusion.evaluation.metrics.inception import inception_score
from melfusion.evaluation.metrics.kl import KLResult, kl_divergence_paired, softmax
from melfusion.evaluation.metrics.similarity import (
    IMSMResult,
    clap_score,
    cosine_similarity_paired,
    ibsc,
    imsm,
    imsm_from_embeddings,
    similarity_logits,
)
from melfusion.evaluation.metrics.spectral import spectral_distribution, spectral_kl
from melfusion.evaluation.metrics.stateful import (
    FrechetDistanceMetric,
    IMSMMetric,
    InceptionScoreMetric,
    MeanMetric,
    Metric,
    PairedCosineMetric,
    PairedKLMetric,
)
from melfusion.evaluation.metrics.variance import ExplainedVariance, explained_variance

__all__ = [
    "ExplainedVariance",
    "FADInfResult",
    "FrechetDistanceMetric",
    "FrechetResult",
    "IMSMMetric",
    "IMSMResult",
    "InceptionScoreMetric",
    "KLResult",
    "MeanMetric",
    "Metric",
    "PairedCosineMetric",
    "PairedKLMetric",
    "clap_score",
    "cosine_similarity_paired",
    "embedding_statistics",
    "explained_variance",
    "fad_infinity",
    "frechet_distance",
    "frechet_distance_details",
    "frechet_distance_from_embeddings",
    "ibsc",
    "imsm",
    "imsm_from_embeddings",
    "inception_score",
    "kl_divergence_paired",
    "similarity_logits",
    "softmax",
    "spectral_distribution",
    "spectral_kl",
    "trace_sqrt_product",
]
