"""Evaluation statistics against independent computations."""

import math

import numpy as np
import pytest
import scipy.linalg

from motionfleet.evaluation.statistics import (
    Moments,
    fold_moments,
    frechet_distance,
    match_stats,
    mean_and_interval,
    mean_pair_distance,
    pair_indices,
)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The public evaluators' FID: np.cov and scipy.linalg.sqrtm of the covariance product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(root))


def test_fid_from_batch_moments_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16)).astype(np.float32)
    b = (rng.normal(size=(150, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3).astype(np.float32)
    moments_a = fold_moments(np.array_split(a, 7))  # batches of unequal size
    moments_b = fold_moments([b])
    mu, cov = moments_a.mean_covariance()
    np.testing.assert_allclose(mu, a.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(a.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)
    ours = frechet_distance(*moments_a.mean_covariance(), *moments_b.mean_covariance())
    assert ours == pytest.approx(scipy_fid(a.astype(np.float64), b.astype(np.float64)), rel=1e-7)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_moments_need_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        Moments.of(np.ones((1, 3))).mean_covariance()


def test_r_precision_on_embeddings_with_known_ranks():
    # 1-D embeddings: text i at 10 i; motion j at 10 j + offset_j. Text i's own motion is at
    # distance |offset_i|; the neighbour motions i +- 1 sit 10 + offsets away, so the own motion's
    # rank is set by the offsets below.
    texts = np.array([[0.0], [10.0], [20.0], [30.0]])
    motions = np.array([[0.0], [16.0], [33.0], [30.0]])
    # text 0: own 0 at distance 0 -> rank 0
    # text 1: own motion at 6; motion 0 at 10 -> rank 0
    # text 2: own at 13; motion 1 at 4, motion 3 at 10 -> rank 2
    # text 3: own at 0 -> rank 0
    stats = match_stats(texts, motions)
    assert stats.hits == (3, 3, 4)
    assert stats.count == 4
    assert stats.distance_sum == pytest.approx(0 + 6 + 13 + 0)
    assert stats.ranks == (0, 0, 2, 0)  # the per-sample record's ranks, as listed above
    assert stats.distances == pytest.approx((0, 6, 13, 0))


def test_r_precision_ties_count_like_a_stable_argsort():
    texts = np.array([[0.0], [0.0]])
    motions = np.array([[1.0], [-1.0]])  # both motions at distance 1 from both texts
    stats = match_stats(texts, motions)
    ranks = [int(np.where(np.argsort(np.abs(motions[:, 0] - t[0]), kind="stable") == i)[0][0]) for i, t in enumerate(texts)]
    assert ranks == [0, 1]
    assert stats.hits == (1, 2, 2)
    assert list(stats.ranks) == ranks


def test_interval_is_196_sigma_over_root_n():
    values = [1.0, 2.0, 4.0, 7.0]
    mean, interval = mean_and_interval(values)
    assert mean == 3.5
    assert interval == pytest.approx(1.96 * np.std(values) / math.sqrt(4))


def test_pair_distances_and_their_draws():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(20, 5))
    first, second = pair_indices(np.random.default_rng(1), 20, 6)
    assert len(set(first.tolist())) == 6 and len(set(second.tolist())) == 6
    expected = np.mean([np.linalg.norm(e[i] - e[j]) for i, j in zip(first, second)])
    assert mean_pair_distance(e, first, second) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="at least 30"):
        pair_indices(np.random.default_rng(1), 20, 30)
