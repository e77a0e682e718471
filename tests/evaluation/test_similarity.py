from __future__ import annotations

import math

import numpy as np
import pytest

from melfusion.evaluation.metrics import (
    clap_score,
    cosine_similarity_paired,
    ibsc,
    imsm,
    imsm_from_embeddings,
)
from melfusion.evaluation.metrics.stateful import IMSMMetric, PairedCosineMetric


def test_imsm_hand_worked_3x3() -> None:
    ln2, ln3 = math.log(2.0), math.log(3.0)
    # CLIP logits_per_image: each image prefers its own text 2:1:1 → P_clip rows (1/2, 1/4, 1/4) rotated
    clip = np.array([[ln2, 0, 0], [0, ln2, 0], [0, 0, ln2]])
    # CLAP logits_per_audio: clips 0, 1 prefer their text 3:1:1, clip 2 is indifferent
    clap = np.array([[ln3, 0, 0], [0, ln3, 0], [0, 0, 0]])
    # P_clip · P_clapᵀ worked by hand
    a = np.array([[0.4, 0.3, 1 / 3], [0.3, 0.4, 1 / 3], [0.3, 0.3, 1 / 3]])
    r = imsm(clip, clap)
    expected = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(r.matrix, expected, rtol=1e-12)
    np.testing.assert_allclose(
        r.diagonal, [0.3520699809924452, 0.3520699809924452, 0.34078142942661366], rtol=1e-9
    )
    assert r.mean == pytest.approx((2 * 0.3520699809924452 + 0.34078142942661366) / 3, rel=1e-9)
    np.testing.assert_allclose(r.matrix.sum(axis=1), 1.0)


def test_imsm_diagonal_bound() -> None:
    n = 4
    big = np.eye(n) * 1e3  # perfectly confident, perfectly aligned
    r = imsm(big, big)
    assert r.diagonal == pytest.approx([math.e / (math.e + n - 1)] * n)


def test_imsm_from_embeddings_and_groups() -> None:
    rng = np.random.default_rng(0)
    n, d = 5, 8
    img, ct, aud, at = (rng.standard_normal((n, d)) for _ in range(4))
    whole = imsm_from_embeddings(img, ct, aud, at, clip_logit_scale=100.0, clap_logit_scale=30.0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    ref = imsm(100.0 * unit(img) @ unit(ct).T, 30.0 * unit(aud) @ unit(at).T)
    np.testing.assert_allclose(whole.matrix, ref.matrix)
    grouped = imsm_from_embeddings(
        img, ct, aud, at, clip_logit_scale=100.0, clap_logit_scale=30.0, group_size=2
    )
    # groups [0, 2), [2, 5): a trailing group of one joins the previous group
    assert np.isnan(grouped.matrix[0, 2]) and np.isfinite(grouped.matrix[4, 2])
    first = imsm(100.0 * unit(img[:2]) @ unit(ct[:2]).T, 30.0 * unit(aud[:2]) @ unit(at[:2]).T)
    np.testing.assert_allclose(grouped.diagonal[:2], first.diagonal)
    with pytest.raises(ValueError):
        imsm_from_embeddings(img[:1], ct[:1], aud[:1], at[:1], clip_logit_scale=1.0, clap_logit_scale=1.0)


def test_imsm_metric_orders_by_name() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((3, 4)) for _ in range(4)]
    m = IMSMMetric()
    m.update(["c.wav", "a.wav"], *(x[[2, 0]] for x in arrays))
    m.update(["b.wav"], *(x[[1]] for x in arrays))
    out = m.compute(clip_logit_scale=10.0, clap_logit_scale=10.0)
    assert out.names == ["a.wav", "b.wav", "c.wav"]
    direct = imsm_from_embeddings(*arrays, clip_logit_scale=10.0, clap_logit_scale=10.0)
    np.testing.assert_allclose(out.result.matrix, direct.matrix)


def test_cosine_scores() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity_paired(a, b), [1.0, -1.0, 0.0], atol=1e-12)
    assert clap_score(a, b) == pytest.approx(0.0, abs=1e-12)
    assert ibsc(a, a) == pytest.approx(1.0)
    m = PairedCosineMetric()
    m.update(["x", "y", "z"], a, b)
    assert m.compute().per_item == pytest.approx({"x": 1.0, "y": -1.0, "z": 0.0})
