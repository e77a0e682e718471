"""Joining consecutive windows of audio (long-form generation): a power-preserving crossfade at each seam."""

from __future__ import annotations

import numpy as np


def crossfade_gains(n: int, correlation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in), each (n,) float32: the equal-power pair cos/sin of θ ∈ [0, π/2], normalised for the
    two segments' correlation ρ ∈ [0, 1] so the sum keeps the power of either segment:
    (a·x + b·y)² has mean a² + b² + 2ρab, hence gains a/g, b/g with g = sqrt(1 + 2ρ·a·b). ρ = 0 (independent
    phases, e.g. two Griffin-Lim renderings) is the plain equal-power fade; ρ = 1 (the same signal) becomes
    the equal-gain (linear-sum) fade, which is what keeps a coherent signal's level."""
    if n <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    rho = float(np.clip(correlation, 0.0, 1.0))
    theta = (np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)
    a, b = np.cos(theta), np.sin(theta)
    g = np.sqrt(1.0 + 2.0 * rho * a * b)
    return (a / g).astype(np.float32), (b / g).astype(np.float32)


def correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normalised zero-lag correlation of the rows of x and y (B, n) → (B,), 0 where either is silent."""
    num = np.sum(x * y, axis=-1)
    den = np.sqrt(np.sum(x * x, axis=-1) * np.sum(y * y, axis=-1))
    return np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0)


def crossfade_into(
    out: np.ndarray, segment: np.ndarray, start: int, overlap: int, rho: float | None = None
) -> None:
    """Write ``segment`` (B, n) into ``out`` (B, T) at ``start``; its first ``overlap`` samples are crossfaded
    with what ``out`` already holds there, with gains for the two parts' correlation ``rho`` (default:
    measured per row over the overlap)."""
    end = min(start + segment.shape[-1], out.shape[-1])
    segment = segment[:, : end - start]
    overlap = min(overlap, segment.shape[-1])
    if overlap > 0:
        old, new = out[:, start : start + overlap], segment[:, :overlap]
        rhos = correlation(old, new) if rho is None else np.full(old.shape[0], rho)
        for row, r in enumerate(rhos):
            fade_out, fade_in = crossfade_gains(overlap, r)
            out[row, start : start + overlap] = old[row] * fade_out + new[row] * fade_in
    out[:, start + overlap : end] = segment[:, overlap:]
