"""Fréchet distance between two Gaussians fitted to embeddings (FAD with VGGish, FD with PANNs), and FAD∞.

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})            (Heusel et al. 2017; Kilgour et al. 2019)

Everything is float64. The trace of the matrix square root is taken from an eigen-decomposition:
Σ₁Σ₂ is similar to the symmetric PSD matrix Lᵀ Σ₂ L (Σ₁ = L Lᵀ, Cholesky; Σ₁^{1/2} Σ₂ Σ₁^{1/2} via `eigh`
when Σ₁ is singular), so Tr((Σ₁Σ₂)^{1/2}) = Σᵢ √λᵢ of it, computed with `eigvalsh` (no complex
arithmetic, no Schur iteration). `scipy.linalg.sqrtm(Σ₁Σ₂)` — the
route of pytorch-fid, audioldm_eval, frechet-audio-distance and fadtk — is available as a cross-check.
When a result is not finite, εI is added to both covariances (the pytorch-fid fallback).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.linalg

SqrtMethod = Literal["eig", "sqrtm"]


@dataclass(frozen=True)
class FrechetResult:
    """A Fréchet distance and how it was obtained."""

    distance: float
    trace_sqrt: float  # Tr((Σ₁Σ₂)^{1/2}) used in `distance`
    method: SqrtMethod
    eps_added: bool = False  # εI was added to both covariances
    check_method: SqrtMethod | None = None  # the other route, when cross-checked
    check_distance: float | None = None  # the same distance through `check_method`
    check_rel_diff: float | None = None  # |distance − check_distance| / max(|distance|, 1e-6·scale)


@dataclass(frozen=True)
class FADInfResult:
    """FAD∞ (fadtk): intercept of a line fitted to FD(n) against 1/n."""

    score: float  # the intercept, FD extrapolated to n → ∞
    slope: float
    r2: float
    points: list[tuple[int, float]] = field(default_factory=list)  # (n, FD at n)


def embedding_statistics(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (np.cov, rowvar=False) of (N, D) embeddings, in float64."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings for a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    mu = x.mean(axis=0)  # (D,)
    sigma = np.atleast_2d(np.cov(x, rowvar=False))  # (D, D)
    return mu, sigma


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh; tiny negative eigenvalues clip to 0."""
    w, v = np.linalg.eigh((sigma + sigma.T) * 0.5)  # w: (D,), v: (D, D)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: SqrtMethod = "eig") -> float:
    """Tr((Σ₁Σ₂)^{1/2}) for symmetric PSD Σ₁, Σ₂ (D, D). May return NaN/inf on broken input."""
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    if method == "eig":
        try:  # Σ₁ = L Lᵀ: Lᵀ Σ₂ L has the spectrum of Σ₁Σ₂ (Cholesky is ~2.5× cheaper than eigh)
            low = np.linalg.cholesky(s1)
            m = low.T @ s2 @ low  # (D, D) symmetric PSD
        except np.linalg.LinAlgError:  # singular Σ₁ (fewer samples than dimensions): Σ₁^{1/2} Σ₂ Σ₁^{1/2}
            r = _psd_sqrt(s1)
            m = r @ s2 @ r
        ev = np.linalg.eigvalsh((m + m.T) * 0.5)
        return float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    if method == "sqrtm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on singular products; we check finiteness
            covmean = scipy.linalg.sqrtm(s1 @ s2)
        if isinstance(covmean, tuple):  # scipy < 1.10 with disp=False semantics
            covmean = covmean[0]
        covmean = np.asarray(covmean)
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
                return float("nan")
            covmean = covmean.real
        return float(np.trace(covmean))
    raise ValueError(f"unknown square-root method {method!r} (use 'eig' or 'sqrtm')")


def _distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, method: SqrtMethod):
    diff = mu1 - mu2
    tr_sqrt = trace_sqrt_product(s1, s2, method)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt), tr_sqrt


def frechet_distance_details(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    eps: float = 1e-6,
    method: SqrtMethod = "eig",
    cross_check: bool = False,
    rtol: float = 1e-3,
) -> FrechetResult:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), with the εI fallback and an optional sqrtm check.

    With `cross_check`, the distance is recomputed through the other route (`scipy.linalg.sqrtm` for the
    default eigen route) and a RuntimeWarning is raised when the two differ by more than `rtol`.
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))  # (D,)
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))  # (D, D)
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if m1.shape != m2.shape:
        raise ValueError(f"mean vectors differ in length: {m1.shape} vs {m2.shape}")
    if s1.shape != s2.shape or s1.shape != (m1.shape[0], m1.shape[0]):
        raise ValueError(
            f"covariances must both be ({m1.shape[0]}, {m1.shape[0]}), got {s1.shape} and {s2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (m1, m2, s1, s2)):
        raise ValueError("statistics contain NaN or inf")

    dist, tr_sqrt = _distance(m1, s1, m2, s2, method)
    eps_added = False
    if not np.isfinite(dist):
        offset = np.eye(s1.shape[0]) * eps
        s1, s2 = s1 + offset, s2 + offset
        dist, tr_sqrt = _distance(m1, s1, m2, s2, method)
        eps_added = True
    check_method: SqrtMethod | None = None
    check_distance = rel = None
    if cross_check:
        check_method = "sqrtm" if method == "eig" else "eig"
        check_distance, _ = _distance(m1, s1, m2, s2, check_method)
        # relative to the distance, floored at 1e-6 of the terms' scale so d ≈ 0 does not warn spuriously
        scale = float(np.trace(s1) + np.trace(s2) + (m1 - m2) @ (m1 - m2))
        rel = abs(dist - check_distance) / max(abs(dist), 1e-6 * scale, 1e-300)
        if not np.isfinite(rel) or rel > rtol:
            warnings.warn(
                f"Fréchet distance: {method} route {dist:.6g} and {check_method} route {check_distance:.6g} "
                f"disagree (relative difference {rel:.2e} > {rtol:g})",
                RuntimeWarning,
                stacklevel=2,
            )
    return FrechetResult(
        distance=dist,
        trace_sqrt=tr_sqrt,
        method=method,
        eps_added=eps_added,
        check_method=check_method,
        check_distance=check_distance,
        check_rel_diff=rel,
    )


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    eps: float = 1e-6,
    method: SqrtMethod = "eig",
) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) as a float (see `frechet_distance_details`)."""
    return frechet_distance_details(mu1, sigma1, mu2, sigma2, eps=eps, method=method).distance


def frechet_distance_from_embeddings(
    embeddings1: np.ndarray, embeddings2: np.ndarray, **kwargs: object
) -> FrechetResult:
    """Fit a Gaussian to each (N, D) set and return their Fréchet distance (details)."""
    mu1, s1 = embedding_statistics(embeddings1)
    mu2, s2 = embedding_statistics(embeddings2)
    return frechet_distance_details(mu1, s1, mu2, s2, **kwargs)  # type: ignore[arg-type]


def fad_infinity(
    eval_embeddings: np.ndarray,
    reference_mu: np.ndarray,
    reference_sigma: np.ndarray,
    *,
    steps: int = 25,
    min_n: int = 500,
    seed: int = 0,
) -> FADInfResult:
    """FAD∞ as fadtk computes it (Gui et al. 2024, "Adapting FAD for generative music evaluation").

    For `steps` sample sizes n evenly spaced in [min_n, N], draw n evaluation embeddings with replacement,
    compute FD(n) against the reference statistics, fit FD = slope/n + intercept; the intercept is FAD∞.
    fadtk's default min_n is 500; for smaller sets it is lowered to N/2 (at least 2) so a line can be fitted.
    """
    x = np.asarray(eval_embeddings, dtype=np.float64)  # (N, D)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    max_n = x.shape[0]
    if max_n < 4:
        raise ValueError(f"FAD∞ needs at least 4 embeddings, got {max_n}")
    lo = min(min_n, max(2, max_n // 2))
    ns = sorted({int(n) for n in np.linspace(lo, max_n, steps)})
    if len(ns) < 2:
        raise ValueError("FAD∞ needs at least two distinct sample sizes")
    rng = np.random.default_rng(seed)
    points: list[tuple[int, float]] = []
    for n in ns:
        idx = rng.choice(max_n, size=n, replace=True)
        mu, sigma = embedding_statistics(x[idx])
        points.append((n, frechet_distance(mu, sigma, reference_mu, reference_sigma)))
    xs = 1.0 / np.array(ns, dtype=np.float64)
    ys = np.array([p[1] for p in points])
    slope, intercept = np.polyfit(xs, ys, 1)
    ss_tot = float(np.sum((ys - ys.mean()) ** 2))
    r2 = 1.0 - float(np.sum((ys - (slope * xs + intercept)) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return FADInfResult(score=float(intercept), slope=float(slope), r2=r2, points=points)
