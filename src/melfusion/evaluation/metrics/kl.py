"""KL divergence between classifier outputs of filename-paired clips (audioldm_eval's `calculate_kl`).

For pairs i = 1..N of (reference, generated) PANNs logits over C = 527 AudioSet classes:

    kl_softmax = (1/N) Σᵢ Σ_c p_ref,ic · (log p_ref,ic − log(p_gen,ic + ε)),   p = softmax(logits)
    kl_sigmoid = (1/N) Σᵢ Σ_c s_ref,ic · (log s_ref,ic − log(s_gen,ic + ε)),   s = sigmoid(logits)

i.e. KL(reference ‖ generated) — `torch.nn.functional.kl_div((p_gen + ε).log(), p_ref, reduction="sum") / N`
with ε = 1e-6, terms with p_ref = 0 counted as 0. The sigmoid form is that same expression on per-class
sigmoids (not a sum of Bernoulli KLs), exactly as audioldm_eval (and AudioLDM, Tango, MeLFusion) report it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KL_EPS = 1e-6


@dataclass(frozen=True)
class KLResult:
    kl_softmax: float
    kl_sigmoid: float
    per_pair_softmax: np.ndarray  # (N,) Σ_c term for each pair
    per_pair_sigmoid: np.ndarray  # (N,)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free σ(z)


def _kl_rows(target: np.ndarray, pred: np.ndarray, eps: float) -> np.ndarray:
    """Σ_c target · (log target − log(pred + ε)) per row; 0 where target = 0 (torch kl_div convention)."""
    safe_t = np.where(target > 0, target, 1.0)
    terms = np.where(target > 0, target * (np.log(safe_t) - np.log(pred + eps)), 0.0)  # (N, C)
    return terms.sum(axis=1)


def kl_divergence_paired(
    generated_logits: np.ndarray, reference_logits: np.ndarray, *, eps: float = KL_EPS
) -> KLResult:
    """audioldm_eval KL (softmax and sigmoid) for row-aligned pairs of (N, C) logits."""
    gen = np.asarray(generated_logits, dtype=np.float64)
    ref = np.asarray(reference_logits, dtype=np.float64)
    if gen.ndim != 2 or gen.shape != ref.shape:
        raise ValueError(f"logits must be two (N, C) arrays of one shape, got {gen.shape} and {ref.shape}")
    if gen.shape[0] == 0:
        raise ValueError("KL needs at least one matched pair")
    per_soft = _kl_rows(softmax(ref, axis=1), softmax(gen, axis=1), eps)  # (N,)
    per_sig = _kl_rows(sigmoid(ref), sigmoid(gen), eps)  # (N,)
    n = gen.shape[0]
    return KLResult(
        kl_softmax=float(per_soft.sum() / n),
        kl_sigmoid=float(per_sig.sum() / n),
        per_pair_softmax=per_soft,
        per_pair_sigmoid=per_sig,
    )
