from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from melfusion.evaluation.metrics import inception_score, kl_divergence_paired
from melfusion.evaluation.metrics.stateful import InceptionScoreMetric, PairedKLMetric
from melfusion.evaluation.pairing import pair_by_name


def test_kl_is_zero_for_identical_logits() -> None:
    x = np.random.default_rng(0).standard_normal((5, 527)) * 3
    exact = kl_divergence_paired(x, x.copy(), eps=0.0)
    assert exact.kl_softmax == pytest.approx(0.0, abs=1e-12) and exact.kl_sigmoid == pytest.approx(
        0.0, abs=1e-12
    )
    # audioldm_eval's ε = 1e-6 inside log(p_gen + ε) biases it by at most −C·ε (here 527 classes)
    r = kl_divergence_paired(x, x.copy())
    assert -527e-6 <= r.kl_softmax <= 0.0 and -527e-6 <= r.kl_sigmoid <= 0.0


def test_kl_matches_hand_computation() -> None:
    # one pair, two classes: reference logits (0, ln 3) → p = (1/4, 3/4); generated (0, 0) → q = (1/2, 1/2)
    ref = np.array([[0.0, math.log(3.0)]])
    gen = np.array([[0.0, 0.0]])
    r = kl_divergence_paired(gen, ref, eps=0.0)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert r.kl_softmax == pytest.approx(expected, rel=1e-12)
    # sigmoid form: Σ_c s_ref log(s_ref / s_gen), s_ref = (1/2, 3/4), s_gen = (1/2, 1/2)
    expected_sig = 0.5 * math.log(1.0) + 0.75 * math.log(0.75 / 0.5)
    assert r.kl_sigmoid == pytest.approx(expected_sig, rel=1e-12)


def test_kl_matches_audioldm_eval_torch_formula() -> None:
    rng = np.random.default_rng(1)
    gen, ref = rng.standard_normal((7, 20)) * 2, rng.standard_normal((7, 20)) * 2
    g, r = torch.from_numpy(gen), torch.from_numpy(ref)
    eps = 1e-6
    soft = torch.nn.functional.kl_div((g.softmax(1) + eps).log(), r.softmax(1), reduction="sum") / len(g)
    sig = torch.nn.functional.kl_div((g.sigmoid() + eps).log(), r.sigmoid(), reduction="sum") / len(g)
    res = kl_divergence_paired(gen, ref)
    assert res.kl_softmax == pytest.approx(float(soft), rel=1e-10)
    assert res.kl_sigmoid == pytest.approx(float(sig), rel=1e-10)


def test_paired_kl_metric_reports_pairing_mismatches() -> None:
    rng = np.random.default_rng(2)
    m = PairedKLMetric()
    m.update(["a.wav", "b.wav", "c.wav"], generated_logits=rng.standard_normal((3, 4)))
    m.update(["b.flac", "a.flac", "d.flac"], reference_logits=rng.standard_normal((3, 4)))
    out = m.compute()
    assert out.pairing.keys == ["a", "b"]
    assert out.pairing.unmatched_generated == ["c.wav"]
    assert out.pairing.unmatched_reference == ["d.flac"]
    assert "2 pairs matched" in out.pairing.summary() and "c.wav" in out.pairing.summary()
    none = PairedKLMetric()
    none.update(["x.wav"], generated_logits=np.zeros((1, 4)))
    none.update(["y.wav"], reference_logits=np.zeros((1, 4)))
    assert none.compute().result is None


def test_pairing_rejects_ambiguous_names() -> None:
    with pytest.raises(ValueError, match="pair under one name"):
        pair_by_name(["a.wav", "a.flac"], ["a.wav"])


def test_inception_score_extremes() -> None:
    c = 10
    uniform = np.zeros((50, c))
    assert inception_score(uniform, splits=5) == pytest.approx((1.0, 0.0))
    confident = np.full((100, c), -50.0)
    confident[np.arange(100), np.arange(100) % c] = 50.0  # every class equally often, one-hot
    mean, std = inception_score(confident, splits=10, shuffle=False)
    assert mean == pytest.approx(c, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_matches_audioldm_eval() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((37, 12)) * 2
    feats = torch.from_numpy(logits)[np.random.RandomState(2020).permutation(37)].double()
    p, log_p = feats.softmax(1), feats.log_softmax(1)
    scores = []
    for i in range(10):
        pc, lc = p[i * 37 // 10 : (i + 1) * 37 // 10], log_p[i * 37 // 10 : (i + 1) * 37 // 10]
        q = pc.mean(0, keepdim=True)
        scores.append((pc * (lc - q.log())).sum(1).mean().exp().item())
    mean, std = inception_score(logits)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)


def test_inception_metric_is_order_independent_and_adapts_splits() -> None:
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 5))
    names = [f"f{i}.wav" for i in range(6)]
    a, b = InceptionScoreMetric(), InceptionScoreMetric()
    a.update(names, logits)
    b.update(names[::-1], logits[::-1])
    ra, rb = a.compute(), b.compute()
    assert ra.mean == pytest.approx(rb.mean) and ra.splits == 6
    with pytest.raises(ValueError):
        inception_score(logits, splits=10)
