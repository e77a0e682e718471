from __future__ import annotations

import numpy as np
import pytest

from melfusion.evaluation.metrics import explained_variance


def test_explained_variance_matches_anova_and_its_null():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    shift = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])[labels]  # class means differ in dim 0 only
    x = rng.normal(size=(3000, 2)) + shift
    res = explained_variance(x, labels.tolist())
    # dim 0: var(shift) = 2/3 of 5/3 total; dim 1: none → pooled (2/3) / (5/3 + 1) = 0.25
    assert res.num_classes == 3 and res.r2 == pytest.approx(0.25, abs=0.02)
    noise = explained_variance(rng.normal(size=(3000, 4, 5)), labels.tolist())  # (n, ...) rows flattened
    assert noise.null == pytest.approx(2 / 2999)
    assert abs(noise.excess) < 5 * noise.null
    assert explained_variance(x, ["a"] * 3000).r2 == 0.0  # one class explains nothing


def test_explained_variance_exact_on_a_small_case():
    x = np.array([[0.0], [2.0], [4.0], [6.0]])
    res = explained_variance(x, ["a", "a", "b", "b"])
    # total SS 20, class means 1 and 5 around 3: between 2·4 + 2·4 = 16
    assert res.r2 == pytest.approx(0.8) and res.null == pytest.approx(1 / 3)


def test_explained_variance_rejects_mismatched_input():
    with pytest.raises(ValueError, match="one label per row"):
        explained_variance(np.zeros((3, 2)), ["a", "b"])
