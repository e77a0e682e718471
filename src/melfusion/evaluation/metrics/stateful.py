"""Metric objects that accumulate with `update` and reduce across processes in `compute`.

Each process calls `update` on its shard; every process then calls `compute`, which gathers the states
with `torch.distributed.all_gather_object` when a process group is initialised (else uses the local
state) and returns the same result on every rank. Keyed states are ordered by key after gathering, so
results do not depend on how files were sharded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from melfusion.evaluation.metrics.distributed import gather_objects
from melfusion.evaluation.metrics.frechet import (
    FADInfResult,
    FrechetResult,
    fad_infinity,
    frechet_distance_details,
)
from melfusion.evaluation.metrics.inception import IS_SEED, IS_SPLITS, inception_score
from melfusion.evaluation.metrics.kl import KLResult, kl_divergence_paired
from melfusion.evaluation.metrics.similarity import IMSMResult, cosine_similarity_paired, imsm_from_embeddings
from melfusion.evaluation.pairing import Pairing, pair_by_name


class Metric(ABC):
    """update(...) any number of times, then compute() on every process."""

    def __init__(self) -> None:
        self.reset()

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def compute(self) -> Any: ...


# ---------------------------------------------------------------------------------------------------------
# Fréchet distance: streaming Gaussian statistics (Chan et al. parallel mean/covariance merge), float64.


@dataclass
class GaussianAccumulator:
    """Running count, mean and scatter matrix M2 = Σ (x − μ)(x − μ)ᵀ of D-dimensional samples."""

    n: int = 0
    mean: np.ndarray | None = None  # (D,)
    m2: np.ndarray | None = None  # (D, D)

    def add(self, x: np.ndarray) -> None:
        b = np.asarray(x, dtype=np.float64)
        if b.ndim != 2:
            raise ValueError(f"embeddings must be 2-D (N, D), got shape {b.shape}")
        if b.shape[0] == 0:
            return
        if not np.isfinite(b).all():
            raise ValueError("embeddings contain NaN or inf")
        mean_b = b.mean(axis=0)
        centred = b - mean_b
        self.merge(GaussianAccumulator(b.shape[0], mean_b, centred.T @ centred))

    def merge(self, other: GaussianAccumulator) -> None:
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = other.n, other.mean.copy(), other.m2.copy()
            return
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"embedding sizes differ: {self.mean.shape[0]} vs {other.mean.shape[0]}")
        n = self.n + other.n
        delta = other.mean - self.mean  # (D,)
        self.m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        self.mean = self.mean + delta * (other.n / n)
        self.n = n

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ, Σ) with the unbiased covariance, like np.cov."""
        if self.n < 2:
            raise ValueError(f"need at least 2 embeddings for a covariance, got {self.n}")
        return self.mean.copy(), self.m2 / (self.n - 1)


@dataclass(frozen=True)
class FrechetOutput:
    result: FrechetResult
    n_generated: int
    n_reference: int
    fad_inf: FADInfResult | None = None

    @property
    def distance(self) -> float:
        return self.result.distance


class FrechetDistanceMetric(Metric):
    """Fréchet distance between generated and reference embeddings (FAD on VGGish frames, FD on PANNs).

    `keep_generated=True` also keeps the generated rows, which FAD∞ resamples.
    """

    def __init__(self, *, cross_check: bool = True, keep_generated: bool = False) -> None:
        self.cross_check = cross_check
        self.keep_generated = keep_generated
        super().__init__()

    def reset(self) -> None:
        self._gen = GaussianAccumulator()
        self._ref = GaussianAccumulator()
        self._gen_rows: list[np.ndarray] = []
        self._ref_stats: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, generated: np.ndarray | None = None, reference: np.ndarray | None = None) -> None:
        """Add (N, D) generated and/or reference embeddings."""
        if generated is not None:
            self._gen.add(generated)
            if self.keep_generated:
                self._gen_rows.append(np.asarray(generated, dtype=np.float64))
        if reference is not None:
            self._ref.add(reference)

    def set_reference_statistics(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        """Use precomputed reference statistics instead of reference embeddings."""
        self._ref_stats = (np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64))

    def compute(self, *, fad_inf: bool = False, fad_inf_seed: int = 0) -> FrechetOutput:
        states = gather_objects((self._gen, self._ref, self._gen_rows if fad_inf else []))
        gen, ref = GaussianAccumulator(), GaussianAccumulator()
        rows: list[np.ndarray] = []
        for g, r, gr in states:
            gen.merge(g)
            ref.merge(r)
            rows.extend(gr)
        mu_g, s_g = gen.statistics()
        if self._ref_stats is not None:
            mu_r, s_r = self._ref_stats
            n_ref = 0
        else:
            mu_r, s_r = ref.statistics()
            n_ref = ref.n
        result = frechet_distance_details(mu_g, s_g, mu_r, s_r, cross_check=self.cross_check)
        inf = None
        if fad_inf:
            if not rows:
                raise ValueError(
                    "FAD∞ needs the generated embeddings: build the metric with keep_generated=True"
                )
            inf = fad_infinity(np.concatenate(rows, axis=0), mu_r, s_r, seed=fad_inf_seed)
        return FrechetOutput(result=result, n_generated=gen.n, n_reference=n_ref, fad_inf=inf)


# ---------------------------------------------------------------------------------------------------------
# Keyed per-item states (KL, IS, paired cosine, IMSM, per-pair means).


def _gather_keyed(local: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in gather_objects(local):
        for key, value in part.items():
            if key in merged:
                raise ValueError(f"item {key!r} was added on more than one process")
            merged[key] = value
    return dict(sorted(merged.items()))


def _check_rows(keys: Sequence[str], *arrays: np.ndarray | None) -> None:
    for a in arrays:
        if a is not None and len(a) != len(keys):
            raise ValueError(f"got {len(keys)} keys for {len(a)} rows")


@dataclass(frozen=True)
class KLOutput:
    result: KLResult | None  # None when no pair matched
    pairing: Pairing


class PairedKLMetric(Metric):
    """audioldm_eval KL (softmax and sigmoid) between PANNs logits of name-paired clips."""

    def reset(self) -> None:
        self._gen: dict[str, np.ndarray] = {}
        self._ref: dict[str, np.ndarray] = {}

    def update(
        self,
        names: Sequence[str],
        generated_logits: np.ndarray | None = None,
        reference_logits: np.ndarray | None = None,
    ) -> None:
        """Add (N, C) logits of generated and/or reference clips, row i belonging to file `names[i]`."""
        _check_rows(names, generated_logits, reference_logits)
        for side, logits in ((self._gen, generated_logits), (self._ref, reference_logits)):
            if logits is not None:
                for name, row in zip(names, np.asarray(logits, dtype=np.float64)):
                    side[name] = row

    def compute(self) -> KLOutput:
        gen = _gather_keyed(self._gen)
        ref = _gather_keyed(self._ref)
        gen_names, ref_names = list(gen), list(ref)
        pairing = pair_by_name(gen_names, ref_names)
        if pairing.n_pairs == 0:
            return KLOutput(result=None, pairing=pairing)
        g = np.stack([gen[gen_names[i]] for i, _ in pairing.pairs])  # (P, C)
        r = np.stack([ref[ref_names[j]] for _, j in pairing.pairs])  # (P, C)
        return KLOutput(result=kl_divergence_paired(g, r), pairing=pairing)


@dataclass(frozen=True)
class ISOutput:
    mean: float
    std: float
    splits: int
    n: int


class InceptionScoreMetric(Metric):
    """Inception score of generated clips' PANNs logits (softmax; 10 splits, shuffled with seed 2020)."""

    def __init__(self, *, splits: int = IS_SPLITS, seed: int = IS_SEED) -> None:
        self.splits = splits
        self.seed = seed
        super().__init__()

    def reset(self) -> None:
        self._rows: dict[str, np.ndarray] = {}

    def update(self, names: Sequence[str], logits: np.ndarray) -> None:
        _check_rows(names, logits)
        for name, row in zip(names, np.asarray(logits, dtype=np.float64)):
            self._rows[name] = row

    def compute(self) -> ISOutput:
        rows = _gather_keyed(self._rows)
        x = np.stack(list(rows.values())) if rows else np.zeros((0, 1))
        splits = min(self.splits, x.shape[0])  # fewer clips than splits: one clip per split
        mean, std = inception_score(x, splits=max(splits, 1), seed=self.seed)
        return ISOutput(mean=mean, std=std, splits=splits, n=x.shape[0])


@dataclass(frozen=True)
class PairedCosineOutput:
    mean: float
    per_item: dict[str, float]


class PairedCosineMetric(Metric):
    """Mean cosine similarity of row-paired embeddings: CLAP score (audio vs prompt) and IBSc."""

    def reset(self) -> None:
        self._values: dict[str, float] = {}

    def update(self, names: Sequence[str], a: np.ndarray, b: np.ndarray) -> None:
        _check_rows(names, a, b)
        for name, value in zip(names, cosine_similarity_paired(a, b)):
            self._values[name] = float(value)

    def compute(self) -> PairedCosineOutput:
        values = _gather_keyed(self._values)
        if not values:
            raise ValueError("no pairs to score")
        return PairedCosineOutput(mean=float(np.mean(list(values.values()))), per_item=values)


@dataclass(frozen=True)
class IMSMOutput:
    result: IMSMResult
    names: list[str]  # row/column order of the matrix


class IMSMMetric(Metric):
    """IMSM over ⟨image, text, generated music⟩ triplets, ordered by name after gathering."""

    def reset(self) -> None:
        self._rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def update(
        self,
        names: Sequence[str],
        image_embeddings: np.ndarray,
        clip_text_embeddings: np.ndarray,
        audio_embeddings: np.ndarray,
        clap_text_embeddings: np.ndarray,
    ) -> None:
        arrays = [np.asarray(a, dtype=np.float64) for a in (image_embeddings, clip_text_embeddings)]
        arrays += [np.asarray(a, dtype=np.float64) for a in (audio_embeddings, clap_text_embeddings)]
        _check_rows(names, *arrays)
        for i, name in enumerate(names):
            self._rows[name] = tuple(a[i] for a in arrays)  # type: ignore[assignment]

    def compute(
        self, *, clip_logit_scale: float, clap_logit_scale: float, group_size: int | None = None
    ) -> IMSMOutput:
        rows = _gather_keyed(self._rows)
        names = list(rows)
        if not names:
            raise ValueError("no triplets to score")
        cols = [np.stack([rows[n][k] for n in names]) for k in range(4)]  # 4 × (N, D_k)
        result = imsm_from_embeddings(
            *cols, clip_logit_scale=clip_logit_scale, clap_logit_scale=clap_logit_scale, group_size=group_size
        )
        return IMSMOutput(result=result, names=names)


@dataclass(frozen=True)
class MeanOutput:
    mean: float
    per_item: dict[str, float]


class MeanMetric(Metric):
    """Mean of per-item values (e.g. Art2Mus spectral KL per pair)."""

    def reset(self) -> None:
        self._values: dict[str, float] = {}

    def update(self, names: Sequence[str], values: Sequence[float]) -> None:
        _check_rows(names, np.asarray(values))
        for name, value in zip(names, values):
            self._values[name] = float(value)

    def compute(self) -> MeanOutput:
        values = _gather_keyed(self._values)
        if not values:
            raise ValueError("no values to average")
        return MeanOutput(mean=float(np.mean(list(values.values()))), per_item=values)
