from __future__ import annotations

import warnings

import numpy as np
import pytest

from melfusion.evaluation.metrics import (
    embedding_statistics,
    fad_infinity,
    frechet_distance,
    frechet_distance_details,
    frechet_distance_from_embeddings,
    trace_sqrt_product,
)
from melfusion.evaluation.metrics.stateful import FrechetDistanceMetric, GaussianAccumulator


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_closed_form_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    # commuting covariances: d² = ‖Δμ‖² + Σ (√a − √b)²
    expected = 1.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_closed_form_non_commuting_2x2() -> None:
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = s1 @ s2  # eigenvalues λ ≥ 0: (√λ1 + √λ2)² = tr M + 2 √det M
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 0.0])
    expected = 0.25 + 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert trace_sqrt_product(s1, s2) == pytest.approx(tr_sqrt, rel=1e-12)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_sample_estimate_approaches_closed_form() -> None:
    rng = np.random.default_rng(0)
    d = 4
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    exact = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance_from_embeddings(x, y).distance == pytest.approx(exact, rel=0.03)


def test_identical_sets_give_zero() -> None:
    x = np.random.default_rng(1).standard_normal((300, 16))
    r = frechet_distance_from_embeddings(x, x.copy(), cross_check=True)
    assert abs(r.distance) < 1e-9
    assert abs(r.check_distance) < 1e-6


@pytest.mark.parametrize("d,n", [(8, 50), (64, 200), (64, 40)])  # the last one is rank-deficient
def test_eigen_and_sqrtm_routes_agree(d: int, n: int) -> None:
    rng = np.random.default_rng(d + n)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d)) @ (np.eye(d) + 0.2 * rng.standard_normal((d, d))) + 0.3
    mu1, s1 = embedding_statistics(x)
    mu2, s2 = embedding_statistics(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = frechet_distance_details(mu1, s1, mu2, s2, cross_check=True)
    assert r.check_method == "sqrtm"
    assert r.check_rel_diff < 1e-6
    via_sqrtm = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert r.distance == pytest.approx(via_sqrtm, rel=1e-6)


def test_epsilon_fallback_on_non_finite(monkeypatch: pytest.MonkeyPatch) -> None:
    import melfusion.evaluation.metrics.frechet as fr

    calls = []
    real = fr.trace_sqrt_product

    def flaky(s1: np.ndarray, s2: np.ndarray, method: str = "eig") -> float:
        calls.append(float(s1[0, 0]))
        return float("nan") if len(calls) == 1 else real(s1, s2, method)

    monkeypatch.setattr(fr, "trace_sqrt_product", flaky)
    s = np.eye(3)
    r = fr.frechet_distance_details(np.zeros(3), s, np.ones(3), s, eps=1e-6)
    assert r.eps_added and np.isfinite(r.distance)
    assert calls[1] == pytest.approx(1.0 + 1e-6)
    assert r.distance == pytest.approx(3.0, abs=1e-9)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        embedding_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="differ in length"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        embedding_statistics(np.array([[np.nan, 0.0], [1.0, 1.0]]))


def test_streaming_statistics_match_numpy() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((103, 5)) * 3 + 7
    acc = GaussianAccumulator()
    for chunk in np.array_split(x, 7):
        acc.add(chunk)
    mu, sigma = acc.statistics()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10)


def test_metric_object_matches_function() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((120, 6)), rng.standard_normal((90, 6)) + 0.5
    m = FrechetDistanceMetric(keep_generated=True)
    for a, b in zip(np.array_split(x, 4), np.array_split(y, 4)):
        m.update(generated=a, reference=b)
    out = m.compute(fad_inf=True)
    assert out.distance == pytest.approx(frechet_distance_from_embeddings(x, y).distance, rel=1e-10)
    assert (out.n_generated, out.n_reference) == (120, 90)
    assert out.fad_inf is not None and len(out.fad_inf.points) >= 2


def test_fad_infinity_extrapolates_the_bias() -> None:
    rng = np.random.default_rng(5)
    d = 4
    ref = rng.standard_normal((20000, d))
    mu_r, s_r = embedding_statistics(ref)
    gen = rng.standard_normal((3000, d)) + 0.5  # true FD = 4 · 0.25 = 1.0
    res = fad_infinity(gen, mu_r, s_r, steps=10, min_n=300, seed=0)
    assert res.score == pytest.approx(1.0, abs=0.1)
    assert res.slope > 0  # FD is biased upwards at small n
    assert [n for n, _ in res.points][0] == 300
    with pytest.raises(ValueError):
        fad_infinity(gen[:3], mu_r, s_r)
