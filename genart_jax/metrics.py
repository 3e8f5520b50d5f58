"""Sample-quality metrics on feature vectors, in float64 NumPy: Fréchet distance (FID), kernel
inception distance (KID) and k-NN precision/recall. Pure functions of (real, fake) features;
which network made the features is the caller's choice and goes into the metric names."""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("fid", "kid", "pr")


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, F) features in float64, the covariance with N - 1."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (N >= 2, F), got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; tiny negative eigenvalues -> 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) between two Gaussians.

    tr (S1 S2)^1/2 = tr (sqrt(S1) S2 sqrt(S1))^1/2, a symmetric PSD matrix whose eigenvalues
    are real: robust where scipy.linalg.sqrtm of the non-symmetric S1 S2 returns complex noise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched shapes: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} "
                         f"{s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the KID kernel (Bińkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel (diagonals of k(x, x), k(y, y) left out)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def kid(real: np.ndarray, fake: np.ndarray, *, num_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of unbiased MMD^2 over `num_subsets` random subsets of
    min(subset_size, N_real, N_fake) examples of each set, drawn without replacement."""
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 examples per set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(x[rng.choice(len(x), m, replace=False)],
                          y[rng.choice(len(y), m, replace=False)]) for _ in range(num_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.clip(d, 0, None)


KNN_CHUNK_BYTES = 128 * 2**20  # float64 distance block of one chunk of rows: bounds memory


def _row_chunk(n_cols: int, chunk: int | None) -> int:
    """Rows per block so that a (rows, n_cols) float64 block stays near KNN_CHUNK_BYTES."""
    if chunk is not None:
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        return chunk
    return max(1, KNN_CHUNK_BYTES // (8 * max(n_cols, 1)))


def _knn_radii(x: np.ndarray, k: int, chunk: int | None = None) -> np.ndarray:
    """Squared distance from each point of x to its k-th nearest other point of x, computed a
    block of rows at a time (memory O(chunk * N), not O(N^2))."""
    if len(x) <= k:
        raise ValueError(f"k-NN manifold with k={k} needs more than {k} points, got {len(x)}")
    rows = _row_chunk(len(x), chunk)
    # column 0 of a sorted row is the point itself; copy the column, or the view would keep
    # each whole block alive until the end
    return np.concatenate([np.partition(_sq_distances(x[i:i + rows], x), k, axis=1)[:, k].copy()
                           for i in range(0, len(x), rows)])


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray,
              chunk: int | None = None) -> float:
    """Fraction of `queries` inside at least one ball (manifold point, its k-NN radius)."""
    rows = _row_chunk(len(manifold), chunk)
    inside = [(_sq_distances(queries[i:i + rows], manifold) <= radii[None, :]).any(1)
              for i in range(0, len(queries), rows)]
    return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     chunk: int | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision = share of fake
    points inside the real k-NN manifold, recall = share of real points inside the fake one.
    Distances go in blocks of `chunk` rows (default: ~128 MiB blocks); the result does not
    depend on it."""
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    precision = _coverage(x, _knn_radii(x, k, chunk), y, chunk)
    recall = _coverage(y, _knn_radii(y, k, chunk), x, chunk)
    return precision, recall


def compute(real: np.ndarray, fake: np.ndarray, feature_name: str,
            which: tuple[str, ...] = METRICS, *, k: int = 3, kid_subsets: int = 100,
            kid_subset_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The asked metrics of fake vs real features, named after the features they use.

    KID subsets hold min(kid_subset_size, half the smaller set) examples, so that with few
    images the subsets still differ and the reported std says something."""
    unknown = set(which) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {', '.join(METRICS)}")
    out: dict[str, Any] = {}
    tag = f"({feature_name} features)"
    if "fid" in which:
        out[f"FID {tag}"] = fid(real, fake)
    if "kid" in which:
        size = min(kid_subset_size, max(2, min(len(real), len(fake)) // 2))
        mean, std = kid(real, fake, num_subsets=kid_subsets, subset_size=size, seed=seed)
        out[f"KID {tag}"] = mean
        out[f"KID std {tag}"] = std
        out["KID subset size"] = size
    if "pr" in which:
        p, r = precision_recall(real, fake, k)
        out[f"precision (k={k}, {feature_name} features)"] = p
        out[f"recall (k={k}, {feature_name} features)"] = r
    return out
