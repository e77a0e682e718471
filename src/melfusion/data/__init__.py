"""Triplet data for training: manifests and dataset readers, file checks, the torch dataset and the
on-disk feature cache."""

from melfusion.data.cache import (
    AUDIO_LATENTS,
    TEXT_STATES,
    FeatureCache,
    cache_key,
    fingerprint,
    model_fingerprint,
    text_sha256,
)
from melfusion.data.check import PROBLEM_KINDS, CheckReport, Problem, check_manifest
from melfusion.data.dataset import SkipCounter, TripletDataset, collate_triplets, read_audio_window
from melfusion.data.manifest import (
    FORMATS,
    RowProblem,
    TripletRecord,
    detect_format,
    read_manifest,
    read_manifest_with_problems,
    write_manifest,
)

__all__ = [
    "AUDIO_LATENTS",
    "FORMATS",
    "PROBLEM_KINDS",
    "TEXT_STATES",
    "CheckReport",
    "FeatureCache",
    "Problem",
    "RowProblem",
    "SkipCounter",
    "TripletDataset",
    "TripletRecord",
    "cache_key",
    "check_manifest",
    "collate_triplets",
    "detect_format",
    "fingerprint",
    "model_fingerprint",
    "read_audio_window",
    "read_manifest",
    "read_manifest_with_problems",
    "text_sha256",
    "write_manifest",
]
