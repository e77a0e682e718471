"""Cross-modal scores on embeddings: CLAP score, IBSc (Art2Mus) and IMSM (MeLFusion).

- CLAP score: mean over generated clips of cos(CLAP_audio(clip), CLAP_text(its prompt)).
- IBSc (Art2Mus Eq. 5): cos(ImageBind(artwork or ground-truth music), ImageBind(generated music)), per pair,
  averaged.
- IMSM (MeLFusion Eq. 8, as the released `imsm_calculator.py` computes it) for N ⟨image, text, music⟩ triplets:

      P_clip = softmax_over_texts(CLIP logits_per_image)      (N images × N texts)
      P_clap = softmax_over_texts(CLAP logits_per_audio)      (N clips  × N texts)
      IMSM   = softmax_row(P_clip · P_clapᵀ)                  (N images × N clips)

  The score of pair i is IMSM[i, i]; the reported number is their mean. Because the entries of
  P_clip · P_clapᵀ lie in [0, 1], IMSM[i, i] ≤ e / (e + N − 1): the value depends on N (the released
  script uses N = 2, where the bound is 0.731), so N is always reported with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from melfusion.evaluation.metrics.kl import softmax


@dataclass(frozen=True)
class IMSMResult:
    matrix: np.ndarray  # (N, N) images × clips; NaN outside the groups when computed in groups
    diagonal: np.ndarray  # (N,) IMSM[i, i], the per-pair score
    mean: float  # mean of the diagonal
    group_size: int  # N of each softmax (the last group may be smaller)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def cosine_similarity_paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays → (N,)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"need two (N, D) arrays of one shape, got {x.shape} and {y.shape}")
    return (l2_normalize(x) * l2_normalize(y)).sum(axis=1)


def clap_score(audio_embeddings: np.ndarray, text_embeddings: np.ndarray) -> float:
    """Mean cosine similarity between each generated clip's CLAP audio embedding and its prompt's."""
    return float(cosine_similarity_paired(audio_embeddings, text_embeddings).mean())


def ibsc(embeddings_a: np.ndarray, embeddings_b: np.ndarray) -> float:
    """ImageBind score (Art2Mus): mean cosine similarity of paired ImageBind embeddings."""
    return float(cosine_similarity_paired(embeddings_a, embeddings_b).mean())


def similarity_logits(a: np.ndarray, b: np.ndarray, logit_scale: float) -> np.ndarray:
    """logit_scale · cos(aᵢ, bⱼ) for (N, D) × (M, D) → (N, M), as CLIP/CLAP compute logits_per_*."""
    return float(logit_scale) * (l2_normalize(a) @ l2_normalize(b).T)


def imsm(image_text_logits: np.ndarray, audio_text_logits: np.ndarray) -> IMSMResult:
    """IMSM from CLIP logits_per_image (N, N) and CLAP logits_per_audio (N, N); texts on the columns."""
    li = np.asarray(image_text_logits, dtype=np.float64)
    la = np.asarray(audio_text_logits, dtype=np.float64)
    if li.ndim != 2 or li.shape[0] != li.shape[1] or li.shape != la.shape:
        raise ValueError(f"IMSM needs two square (N, N) logit matrices, got {li.shape} and {la.shape}")
    p_clip = softmax(li, axis=1)  # (N images, N texts)
    p_clap = softmax(la, axis=1)  # (N clips, N texts)
    matrix = softmax(p_clip @ p_clap.T, axis=1)  # (N images, N clips)
    diag = np.diagonal(matrix).copy()
    return IMSMResult(matrix=matrix, diagonal=diag, mean=float(diag.mean()), group_size=li.shape[0])


def imsm_from_embeddings(
    image_embeddings: np.ndarray,
    clip_text_embeddings: np.ndarray,
    audio_embeddings: np.ndarray,
    clap_text_embeddings: np.ndarray,
    *,
    clip_logit_scale: float,
    clap_logit_scale: float,
    group_size: int | None = None,
) -> IMSMResult:
    """IMSM over N triplets (row i of every array belongs to triplet i), optionally in groups.

    `group_size=None` computes one N×N softmax over the whole set; a group size g computes it over
    consecutive groups of g triplets (a last group of one is merged into the previous one).
    The logit scales are the models' exp(logit_scale) (CLIP ≈ 100; CLAP's logit_scale_a).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (image_embeddings, clip_text_embeddings)]
    arrays += [np.asarray(a, dtype=np.float64) for a in (audio_embeddings, clap_text_embeddings)]
    n = arrays[0].shape[0]
    if any(a.ndim != 2 or a.shape[0] != n for a in arrays):
        raise ValueError(f"IMSM needs four (N, D) arrays with one N, got {[a.shape for a in arrays]}")
    if n < 2:
        raise ValueError(f"IMSM needs at least 2 triplets (a softmax over one is 1), got {n}")
    g = n if group_size is None else int(group_size)
    if g < 2:
        raise ValueError(f"IMSM group size must be at least 2, got {g}")
    bounds = list(range(0, n, g)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]  # a trailing group of one joins the previous group
    matrix = np.full((n, n), np.nan)
    diag = np.empty(n)
    img, ctext, aud, atext = arrays
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        li = similarity_logits(img[lo:hi], ctext[lo:hi], clip_logit_scale)  # (g, g) images × texts
        la = similarity_logits(aud[lo:hi], atext[lo:hi], clap_logit_scale)  # (g, g) clips × texts
        block = imsm(li, la)
        matrix[lo:hi, lo:hi] = block.matrix
        diag[lo:hi] = block.diagonal
    return IMSMResult(matrix=matrix, diagonal=diag, mean=float(diag.mean()), group_size=g)
