"""Quality metrics against direct float64 computations and Gaussian cases with known answers."""

import numpy as np
import pytest
import scipy.linalg

from genart_jax import metrics


def random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("d", [2, 16, 64])
def test_frechet_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    ours = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8)


def test_frechet_rank_deficient_covariances_are_finite_and_match_scipy():
    rng = np.random.default_rng(0)
    d = 32
    mu = rng.normal(size=d)
    s1, s2 = random_cov(rng, d, rank=5), random_cov(rng, d, rank=7)  # fewer samples than dims
    ours = metrics.frechet_distance(mu, s1, mu, s2)
    assert np.isfinite(ours) and ours >= 0
    assert ours == pytest.approx(scipy_frechet(mu, s1, mu, s2), rel=1e-5, abs=1e-6)


def test_frechet_known_gaussians():
    rng = np.random.default_rng(1)
    d = 10
    mu, s = rng.normal(size=d), random_cov(rng, d)
    assert metrics.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    shift = rng.normal(size=d)
    assert metrics.frechet_distance(mu, s, mu + shift, s) == pytest.approx(shift @ shift,
                                                                           rel=1e-9)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert metrics.frechet_distance(mu, np.diag(v1), mu, np.diag(v2)) == pytest.approx(
        expected, rel=1e-9)


def test_fid_of_features_uses_sample_mean_and_covariance():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(500, 4)), rng.normal(size=(400, 4)) * 2 + 1
    expected = scipy_frechet(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
    assert metrics.fid(a, b) == pytest.approx(expected, rel=1e-8)
    assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-9)


def direct_mmd2_unbiased(x, y):
    d = x.shape[1]
    m, n = len(x), len(y)

    def k(a, b):
        return (np.dot(a, b) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_direct_unbiased_estimate():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.3
    expected = direct_mmd2_unbiased(x, y)
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)
    mean, std = metrics.kid(x, y, num_subsets=1, subset_size=30)  # the whole sets, permuted
    assert mean == pytest.approx(expected, rel=1e-10) and std == 0.0


def test_kid_near_zero_for_one_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    shifted = rng.normal(size=(1000, 8)) + 0.5
    same_mean, same_std = metrics.kid(a, b, num_subsets=20, subset_size=500)
    diff_mean, diff_std = metrics.kid(a, shifted, num_subsets=20, subset_size=500)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert diff_mean > 10 * diff_std and diff_mean > 0.05


def test_precision_recall_constructed_sets():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(200, 3))
    assert metrics.precision_recall(a, a) == (1.0, 1.0)
    assert metrics.precision_recall(a, a + 100.0) == (0.0, 0.0)
    # Two far clusters of real points; the fakes cover only the first: every fake is
    # realistic (precision 1) but only the first cluster's half of the reals is covered.
    two = np.concatenate([a, a + 100.0])
    fake = a + rng.normal(size=a.shape) * 1e-3
    precision, recall = metrics.precision_recall(two, fake)
    assert precision == 1.0
    assert recall == pytest.approx(0.5, abs=0.02)


def test_compute_names_the_features_and_checks_metric_names():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
    out = metrics.compute(a, b, "digits classifier", ("fid", "kid", "pr"))
    assert set(out) == {"FID (digits classifier features)", "KID (digits classifier features)",
                        "KID std (digits classifier features)", "KID subset size",
                        "precision (k=3, digits classifier features)",
                        "recall (k=3, digits classifier features)"}
    assert out["KID subset size"] == 25 and out["KID std (digits classifier features)"] > 0
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.compute(a, b, "x", ("is",))


def test_precision_uses_the_kth_neighbour_radius_inclusive():
    real = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # k=3: the ball of 10 has radius 9 (distances 4, 7, 9, 10), so 19 is on its boundary
    # (inside); 19.5 is outside every ball (the next widest reaching right is 6's, radius 5),
    # and so are 100 and 101.
    fake = np.array([[19.0], [19.5], [100.0], [101.0]])
    assert metrics.precision_recall(real, fake, k=3)[0] == 0.25
    assert metrics.precision_recall(real, fake, k=1)[0] == 0.0  # radius of 10 is 4


def _brute_precision_recall(real, fake, k):
    """The whole N x N distance matrices at once, by explicit differences: the reference."""
    def radii(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]

    def cover(m, r, q):
        return float((((q[:, None] - m[None]) ** 2).sum(-1) <= r[None]).any(1).mean())
    return cover(real, radii(real), fake), cover(fake, radii(fake), real)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000, None])
def test_precision_recall_do_not_depend_on_the_chunk_size(chunk):
    rng = np.random.default_rng(9)
    real, fake = rng.normal(size=(150, 5)), rng.normal(size=(130, 5)) * 1.3 + 0.2
    want = _brute_precision_recall(real, fake, 3)
    assert 0 < want[0] < 1 and 0 < want[1] < 1  # neither trivially 0 nor 1
    assert metrics.precision_recall(real, fake, k=3, chunk=chunk) == want


def test_knn_radii_blocks_bound_memory(monkeypatch):
    """With a tiny block budget each distance block holds one row: nothing N x N is made."""
    shapes = []
    orig = metrics._sq_distances
    monkeypatch.setattr(metrics, "_sq_distances",
                        lambda a, b: shapes.append((len(a), len(b))) or orig(a, b))
    monkeypatch.setattr(metrics, "KNN_CHUNK_BYTES", 8 * 40)
    x = np.random.default_rng(0).normal(size=(40, 3))
    metrics.precision_recall(x, x[:30] + 0.1)
    assert max(r for r, _ in shapes) == 1
    with pytest.raises(ValueError, match="chunk must be positive"):
        metrics.precision_recall(x, x, chunk=0)


def test_precision_recall_peak_memory_is_a_few_blocks(monkeypatch):
    """2,000 points in blocks of 10 rows: the peak stays far below one 2,000^2 matrix (32 MB)
    (a kept view of each block would hold all of them: 32 MB again)."""
    import tracemalloc

    monkeypatch.setattr(metrics, "KNN_CHUNK_BYTES", 8 * 2000 * 10)
    x = np.random.default_rng(0).normal(size=(2000, 4))
    tracemalloc.start()
    metrics.precision_recall(x, x * 1.1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2**20, peak
