"""Known-bad image sets made from real ones, to check that a feature space ranks quality:
Gaussian blur, additive noise, a colour shift and mode dropping. Images (N, H, W, C) in
[-1, 1], float32 in and out; each is a pure function of its inputs (and seed)."""

from __future__ import annotations

import numpy as np


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of standard deviation `sigma` pixels, truncated at 3 sigma,
    edges mirrored (scipy.ndimage.gaussian_filter's defaults)."""
    if sigma <= 0:
        return np.asarray(images, np.float32)
    r = int(3 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    x = np.asarray(images, np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        p = np.pad(x, pad, mode="symmetric")
        n = x.shape[axis]
        x = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return x.astype(np.float32)


def noise(images: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise of standard deviation `std` (in [-1, 1] units), clipped."""
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0, std, np.shape(images)), -1, 1).astype(np.float32)


def color_shift(images: np.ndarray, amount: float) -> np.ndarray:
    """Shift the first channel (red; the grey level of greyscale) by `amount`, clipped."""
    x = np.array(images, np.float32)
    x[..., 0] = np.clip(x[..., 0] + amount, -1, 1)
    return x


def drop_modes(images: np.ndarray, modes: np.ndarray, keep: int) -> np.ndarray:
    """Only the images of the first `keep` modes (class labels or clusters), the others gone:
    a model that has collapsed onto part of the data."""
    modes = np.asarray(modes)
    kept = np.unique(modes)[:keep]
    return np.asarray(images)[np.isin(modes, kept)]
