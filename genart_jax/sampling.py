"""Sampling: generator outputs for fixed seeds, BatchNorm recalibration for EMA weights, themes
(classes) of conditional models, and sample grids as PNG.

Theme grids (conditional GANs and VAEs alike): sample i has latent i and theme
themes[i % len(themes)], in a grid of len(themes) columns, so each column is one theme and each
row one latent seed; without themes, every class in order (column c is class c)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from genart_jax.losses import likelihood_mean_image
from genart_jax.models import build_gan, build_vae

PyTree = Any
CALIBRATION_BATCH = 512


def latents(seed: int, num: int, latent_dim: int, start: int = 0) -> jax.Array:
    """Latent i depends only on (seed, i): the first 16 of 64 samples are the 16 samples."""
    key = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (latent_dim,)))(
        jnp.arange(start, start + num))


def theme_labels(num: int, num_classes: int, themes: list[int] | None = None
                 ) -> tuple[np.ndarray | None, int | None]:
    """(labels (num,) int32, grid columns) for `num` samples of the given themes (default: all
    classes), one theme per column; (None, None) for an unconditional model."""
    if num_classes <= 0:
        return None, None
    themes = list(themes) if themes else list(range(num_classes))
    labels = np.asarray([themes[i % len(themes)] for i in range(num)], np.int32)
    return labels, len(themes)


@functools.partial(jax.jit, static_argnums=0)
def _recalibrate(calibrator, params, batch_stats, z, y):
    _, upd = calibrator.apply({"params": params, "batch_stats": batch_stats}, z, y, train=True,
                              mutable=["batch_stats"])
    return upd["batch_stats"]


@functools.partial(jax.jit, static_argnums=0)
def _generate(generator, params, batch_stats, z, y):
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    return generator.apply(variables, z, y, train=False)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _decode_mean(model, kind, params, z, y):
    return likelihood_mean_image(kind, model.apply({"params": params}, z, y,
                                                   method=model.decode))


def vae_prior_samples(cfg: ml_collections.ConfigDict, params: PyTree, *, num: int, seed: int,
                      themes: list[int] | None = None) -> np.ndarray:
    """A VAE's decoder means for z ~ N(0, I) (latent i from `latents(seed, ...)`); a
    conditional model cycles through `themes` (default: all classes), one theme per column."""
    z = latents(seed, num, cfg.model.latent_dim)
    y, _ = theme_labels(num, cfg.model.num_classes, themes)
    return np.asarray(_decode_mean(build_vae(cfg), cfg.vae.likelihood, params, z, y))


def recalibrated_batch_stats(cfg: ml_collections.ConfigDict, g_params: PyTree,
                             g_batch_stats: PyTree, seed: int = 0) -> PyTree:
    """BatchNorm statistics measured afresh for `g_params` on a fixed batch of latents.

    EMA weights never ran in training, so the running statistics of the raw generator do not
    fit them; with momentum 0 the running statistics become those of the calibration batch.
    A conditional generator is calibrated on every class equally (labels cycling 0, 1, ...), the
    mix it saw in training on average.
    """
    if not g_batch_stats:
        return g_batch_stats
    calibrator, _ = build_gan(cfg.model, cfg.data, axis_name=None, bn_momentum=0.0)
    z = latents(seed + 1_000_003, CALIBRATION_BATCH, cfg.model.latent_dim)
    y, _ = theme_labels(CALIBRATION_BATCH, cfg.model.num_classes)
    return _recalibrate(calibrator, g_params, g_batch_stats, z, y)


def generator_variables(cfg: ml_collections.ConfigDict, state: Any, use_ema: bool = True
                        ) -> tuple[PyTree, PyTree]:
    """(params, batch_stats) to sample with from a GAN state: the EMA weights with recalibrated
    statistics (default), or the raw weights with their running statistics."""
    if use_ema:
        return state.ema_g_params, recalibrated_batch_stats(cfg, state.ema_g_params,
                                                            state.g_batch_stats)
    return state.g_params, state.g_batch_stats


def generate(cfg: ml_collections.ConfigDict, g_params: PyTree, g_batch_stats: PyTree, *,
             num: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Images (num, H, W, C) in [-1, 1] from the generator of `cfg` with the given variables;
    `labels` (num,) are the classes of a conditional generator (default: all classes cycling,
    see `theme_labels`)."""
    if num <= 0:
        raise ValueError(f"number of samples must be positive, got {num}")
    return generate_from_latents(cfg, g_params, g_batch_stats,
                                 latents(seed, num, cfg.model.latent_dim), labels)


def generate_from_latents(cfg: ml_collections.ConfigDict, g_params: PyTree,
                          g_batch_stats: PyTree, z: jax.Array | np.ndarray,
                          labels: np.ndarray | None = None) -> np.ndarray:
    """Images (N, H, W, C) in [-1, 1] for explicit latents z (N, latent_dim): the entry point
    of every latent tool (truncation, directions, interpolation, feedback distributions).
    `labels` (N,) are the classes of a conditional generator (default: all classes cycling)."""
    z = jnp.asarray(z, jnp.float32)
    if z.ndim != 2 or z.shape[1] != cfg.model.latent_dim or not z.shape[0]:
        raise ValueError(f"latents must be (N > 0, {cfg.model.latent_dim}), got {z.shape}")
    num, num_classes = z.shape[0], cfg.model.num_classes
    if labels is None:
        labels, _ = theme_labels(num, num_classes)
    elif num_classes <= 0:
        raise ValueError("labels need a conditional model (trained with model.num_classes > 0)")
    labels = None if labels is None else np.asarray(labels, np.int32)
    if labels is not None and (labels.shape != (num,) or labels.min() < 0
                               or labels.max() >= num_classes):
        raise ValueError(f"labels must be {num} classes in 0..{num_classes - 1}, got {labels}")
    generator, _ = build_gan(cfg.model, cfg.data, axis_name=None)
    return np.asarray(_generate(generator, g_params, g_batch_stats, z, labels))


def sample_grid(cfg: ml_collections.ConfigDict, g_params: PyTree, g_batch_stats: PyTree, *,
                num: int, seed: int, themes: list[int] | None = None) -> np.ndarray:
    """A GAN's grid of `num` samples (uint8); conditional: one theme per column (default: all
    classes), unconditional: square."""
    labels, ncols = theme_labels(num, cfg.model.num_classes, themes)
    images = generate(cfg, g_params, g_batch_stats, num=num, seed=seed, labels=labels)
    return image_grid(images, ncols=ncols)


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, H, W, C) in [-1, 1] -> one uint8 image (rows * (H + pad) + pad, ..., C)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    for i in range(n):
        r, q = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top:top + h, left:left + w] = pixels[i]
    return grid


def grid_image(grid: np.ndarray, scale: int = 1) -> Image.Image:
    """A uint8 grid (H, W, C) as a PIL image, upscaled by the integer `scale` (nearest)."""
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)
    return img


def save_png(grid: np.ndarray, path: str | Path, min_size: int = 256) -> Path:
    """Write a grid as PNG, upscaled by an integer factor (nearest) to at least `min_size`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(grid, math.ceil(min_size / max(grid.shape[:2]))).save(path)
    return path


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
    """Spherical interpolation between latent vectors a and b at fractions t (T,) -> (T, D);
    linear where a and b are (nearly) parallel."""
    na, nb = jnp.linalg.norm(a), jnp.linalg.norm(b)
    cos = jnp.clip(jnp.dot(a, b) / jnp.maximum(na * nb, 1e-12), -1.0, 1.0)
    omega = jnp.arccos(cos)
    t = t[:, None]
    so = jnp.sin(omega)
    safe = so > 1e-6
    wa = jnp.where(safe, jnp.sin((1 - t) * omega) / jnp.where(safe, so, 1.0), 1 - t)
    wb = jnp.where(safe, jnp.sin(t * omega) / jnp.where(safe, so, 1.0), t)
    return wa * a[None, :] + wb * b[None, :]


def parse_themes(text: str | None, num_classes: int) -> list[int] | None:
    """'3' or '1,4,7' -> [classes]; None when no theme is asked. Errors name the valid range."""
    if text is None:
        return None
    if num_classes <= 0:
        raise ValueError("--theme needs a conditional model (trained with model.num_classes > "
                         "0); this one is unconditional")
    try:
        themes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise ValueError(f"--theme takes class numbers like 3 or 1,4,7; got {text!r}") from e
    bad = [t for t in themes if not 0 <= t < num_classes]
    if bad or not themes:
        raise ValueError(f"--theme classes must be in 0..{num_classes - 1}; got {text!r}")
    return themes


def interleave_rows(top: np.ndarray, bottom: np.ndarray, ncols: int) -> np.ndarray:
    """Two equal image stacks -> rows alternating ncols of `top` then ncols of `bottom`."""
    out = []
    for i in range(0, len(top), ncols):
        out.extend([top[i:i + ncols], bottom[i:i + ncols]])
    return np.concatenate(out)


# Latent tools: small pure maps of latents (N, D) -> (N, D), applied before generation.

def truncate(z: jax.Array, psi: float, center: jax.Array | float = 0.0) -> jax.Array:
    """Truncation trick: move latents toward `center` (0, the mean of the N(0, I) prior, or a
    refit distribution's mean) by the factor psi; psi=1 is a no-op, psi=0 gives the center."""
    center = jnp.asarray(center, jnp.float32)
    center = center[None, :] if center.ndim == 1 else center
    return center + psi * (jnp.asarray(z) - center)


def attribute_direction(set_a: np.ndarray, set_b: np.ndarray) -> np.ndarray:
    """mean(latents of A) - mean(latents of B), e.g. liked minus disliked: a direction that
    adds what A has and B lacks when added to any latent."""
    if not len(set_a) or not len(set_b):
        raise ValueError("an attribute direction needs latents in both sets")
    return np.mean(set_a, axis=0) - np.mean(set_b, axis=0)


def apply_direction(z: jax.Array, direction: jax.Array, strength: float) -> jax.Array:
    """z + strength * direction for every latent (direction: (D,))."""
    return z + strength * jnp.asarray(direction)[None, :]


def interpolation_latents(seed: int, rows: int, frames: int, latent_dim: int) -> jax.Array:
    """rows strips of `frames` latents each, slerped between the seeded endpoints
    latents(seed, 2 * rows) (row r goes from endpoint 2r to 2r + 1): (rows * frames, D)."""
    ends = latents(seed, 2 * rows, latent_dim)
    t = jnp.linspace(0.0, 1.0, frames)
    return jnp.concatenate([slerp(ends[2 * r], ends[2 * r + 1], t) for r in range(rows)])
