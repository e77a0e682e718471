"""Inception score on classifier logits (audioldm_eval's `calculate_isc`: softmax, 10 splits, shuffled).

    IS = exp( E_x KL( p(y|x) ‖ p(y) ) ),  p(y) = mean of p(y|x) within a split

The rows are shuffled with `np.random.RandomState(2020).permutation(N)` before splitting into
`splits` contiguous chunks [i·N//splits, (i+1)·N//splits); the result is the mean and (population) std
of the per-split scores.
"""

from __future__ import annotations

import numpy as np

from melfusion.evaluation.metrics.kl import log_softmax

IS_SPLITS = 10
IS_SEED = 2020


def inception_score(
    logits: np.ndarray, *, splits: int = IS_SPLITS, shuffle: bool = True, seed: int = IS_SEED
) -> tuple[float, float]:
    """(mean, std) of the Inception score of (N, C) logits over `splits` splits."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {x.shape}")
    n = x.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"Inception score with {splits} splits needs at least {splits} clips, got {n}")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    log_p = log_softmax(x, axis=1)  # (N, C)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_chunk, log_chunk = p[lo:hi], log_p[lo:hi]  # (n_i, C)
        q = p_chunk.mean(axis=0, keepdims=True)  # (1, C) marginal p(y)
        log_q = np.log(np.where(q > 0, q, 1.0))
        kl = np.where(p_chunk > 0, p_chunk * (log_chunk - log_q), 0.0).sum(axis=1)  # (n_i,)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))
