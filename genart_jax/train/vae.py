"""The VAE family's hooks (`train.families`): model + optimizer + step, its state's shapes, the
grids it writes (prior samples, reconstructions, latent interpolation), the variables it
samples and exports, and its evaluation (negative ELBO and the K-sample importance-weighted
bound on a held-out split)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from genart_jax import losses, sampling
from genart_jax.data import read_split
from genart_jax.data.pipeline import split_length
from genart_jax.models import build_vae
from genart_jax.models.registry import architecture_of
from genart_jax.parallel import DATA, check_batch_divisible, make_driver, unroll_fused_steps
from genart_jax.train.optim import make_optimizer
from genart_jax.train.requests import (
    EvalPlan,
    EvalRequest,
    RequestError,
    SampleRequest,
    Written,
    drawn,
)
from genart_jax.train.state import VAEState, init_vae_state
from genart_jax.train.vae_step import Likelihood, make_vae_step

PROGRESS = ("neg_elbo", "kl")
PyTree = Any


def build_model(cfg: ml_collections.ConfigDict) -> nn.Module:
    return build_vae(cfg)


def _init_fn(cfg: ml_collections.ConfigDict):
    model, tx = build_model(cfg), make_optimizer(cfg.optimizer)
    shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
    return model, tx, lambda key: init_vae_state(key, model, tx, image_shape=shape,
                                                 num_classes=cfg.model.num_classes)


def build_training(cfg: ml_collections.ConfigDict, devices=None, steps_per_call: int = 1):
    """(driver, init_fn) for a VAE config."""
    model, tx, init_fn = _init_fn(cfg)
    step = make_vae_step(model, tx, Likelihood.from_config(cfg.vae), beta=cfg.vae.beta,
                         kl_warmup_steps=cfg.vae.kl_warmup_steps, axis_name=DATA)
    driver = make_driver(cfg.train.driver, step, devices, steps_per_call=steps_per_call,
                         unroll=unroll_fused_steps(architecture_of(cfg).convolutional))
    check_batch_divisible(cfg.train.batch_size, driver.num_devices, jax.process_count())
    return driver, init_fn


def abstract_state(cfg: ml_collections.ConfigDict) -> VAEState:
    return jax.eval_shape(_init_fn(cfg)[-1], jax.random.PRNGKey(0))


# ---------------------------------------------------------------------------------------------
# sampling


@functools.partial(jax.jit, static_argnums=(0, 1))
def _decode_mean(model, lik, params, z, y):
    return lik.mean_image(model.apply({"params": params}, z, y, method=model.decode))


@functools.partial(jax.jit, static_argnums=0)
def _encode(model, params, x, y):
    return model.apply({"params": params}, x, y, method=model.encode)


prior_samples = sampling.vae_prior_samples  # lives below training, for genart_jax.quality


def reconstructions(cfg, params, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Decoder means at the posterior means of `images`."""
    model, lik = build_model(cfg), Likelihood.from_config(cfg.vae)
    y = jnp.asarray(labels) if cfg.model.num_classes else None
    mu, _ = _encode(model, params, jnp.asarray(images), y)
    return np.asarray(_decode_mean(model, lik, params, mu, y))


def interpolation(cfg, params, a: np.ndarray, b: np.ndarray, label: int | None = None,
                  steps: int = 10) -> np.ndarray:
    """A strip of decoder means along the spherical path between the posterior means of
    images a and b."""
    model, lik = build_model(cfg), Likelihood.from_config(cfg.vae)
    y2 = jnp.asarray([label or 0] * 2, jnp.int32) if cfg.model.num_classes else None
    mu, _ = _encode(model, params, jnp.stack([jnp.asarray(a), jnp.asarray(b)]), y2)
    z = sampling.slerp(mu[0], mu[1], jnp.linspace(0.0, 1.0, steps))
    y = jnp.asarray([label or 0] * steps, jnp.int32) if cfg.model.num_classes else None
    return np.asarray(_decode_mean(model, lik, params, z, y))


def write_samples(cfg: ml_collections.ConfigDict, state: VAEState, path: Path,
                  real: tuple[np.ndarray, np.ndarray] | None = None,
                  themes: list[int] | None = None) -> list[Path]:
    """The grids of a state at `path`: see `write_grids`."""
    return write_grids(cfg, state.params, path, real, themes)


def write_grids(cfg: ml_collections.ConfigDict, params: PyTree, path: str | Path,
                real: tuple[np.ndarray, np.ndarray] | None = None,
                themes: list[int] | None = None, num: int | None = None,
                seed: int | None = None) -> list[Path]:
    """Prior samples at `path`; with real images also PATH_reconstructions.png (input row above
    output row) and PATH_interpolation.png (slerp between the first two images)."""
    path = Path(path)
    num = cfg.sample.num if num is None else num
    seed = cfg.sample.seed if seed is None else seed
    images = prior_samples(cfg, params, num=num, seed=seed, themes=themes)
    _, ncols = sampling.theme_labels(num, cfg.model.num_classes, themes)  # a theme per column
    written = [sampling.save_png(sampling.image_grid(images, ncols=ncols), path)]
    if real is not None:
        x, y = real
        x, y = x[:16], y[:16]
        rec = reconstructions(cfg, params, x, y)
        cols = min(8, len(x))
        grid = sampling.image_grid(sampling.interleave_rows(x, rec, cols), ncols=cols)
        written.append(sampling.save_png(grid, path.with_name(path.stem + "_reconstructions.png")))
        if len(x) >= 2:
            strip = interpolation(cfg, params, x[0], x[1], int(y[0]))
            written.append(sampling.save_png(sampling.image_grid(strip, ncols=len(strip)),
                                             path.with_name(path.stem + "_interpolation.png")))
    return written


def variables(cfg: ml_collections.ConfigDict, state: VAEState, use_ema: bool = True
              ) -> tuple[PyTree, PyTree, bool]:
    """(params, batch_stats, EMA or not) that sampling and export use: encoder and decoder
    (reconstructions need both), no statistics, no moving average."""
    del cfg, use_ema
    return state.params, {}, False


def generate(cfg: ml_collections.ConfigDict, params: PyTree, batch_stats: PyTree, *, num: int,
             seed: int) -> np.ndarray:
    """Decoder means at `num` prior latents of `seed`."""
    del batch_stats
    return prior_samples(cfg, params, num=num, seed=seed)


def sample(cfg: ml_collections.ConfigDict, params: PyTree, stats: PyTree,
           request: SampleRequest, out: str | Path) -> Written:
    """Prior samples at `out`, reconstructions and interpolation of held-out images beside."""
    del stats
    if request.interpolate or request.direction or request.truncation is not None:
        raise RequestError("--truncation, --interpolate and --direction apply to GANs")
    if request.temperature is not None:
        raise RequestError("--temperature applies to an hvae (model.arch=hvae)")
    real = read_split(cfg.data, cfg.vae.eval_split, limit=16)
    paths = write_grids(cfg, params, out, real, themes=request.themes, num=request.num,
                        seed=request.seed)
    return Written(request.num, "VAE prior", paths,
                   f"; reconstructions and interpolation of {cfg.vae.eval_split} images to "
                   f"{', '.join(map(str, paths[1:]))}")


# ---------------------------------------------------------------------------------------------
# evaluation


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _bounds(model, lik, k, params, x, y, key):
    """Per-example (ELBO estimate averaged over K samples, K-sample IWAE bound)."""
    n = x.shape[0]
    mu, logvar = model.apply({"params": params}, x, y, method=model.encode)
    ekey, bkey = jax.random.split(key)
    target = jax.vmap(lik.target)(x, jax.random.split(bkey, n))  # fixed binarisation
    z = losses.reparameterize(ekey, jnp.broadcast_to(mu, (k, *mu.shape)),
                              jnp.broadcast_to(logvar, (k, *logvar.shape)))  # (K, N, D)
    yk = None if y is None else jnp.tile(y, k)
    out = model.apply({"params": params}, z.reshape(k * n, -1), yk, method=model.decode)
    tk = jnp.broadcast_to(target, (k, *target.shape)).reshape(k * n, *target.shape[1:])
    log_px_z = lik.log_prob(tk, out, params.get("log_scale")).reshape(k, n)
    log_pz = losses.standard_normal_log_density(z)
    log_qz = losses.gaussian_log_density(z, mu, logvar)
    elbo = jnp.mean(log_px_z, axis=0) - losses.gaussian_kl(mu, logvar)
    return elbo, losses.iwae_bound(log_px_z, log_pz, log_qz)


def evaluate(cfg: ml_collections.ConfigDict, params: PyTree, images: np.ndarray,
             labels: np.ndarray, *, k: int, seed: int = 0, batch: int = 50,
             progress: bool = True) -> dict[str, float]:
    """Negative ELBO and negative K-sample IWAE bound on `images`, in nats per image and bits
    per dimension (the IWAE bound is the tighter estimate of -log p(x))."""
    model, lik = build_model(cfg), Likelihood.from_config(cfg.vae)
    elbos, iwaes = [], []
    key = jax.random.PRNGKey(seed)
    for start in tqdm(range(0, len(images), batch), disable=not progress, desc="eval",
                      unit="batch"):
        x = jnp.asarray(images[start:start + batch])
        y = jnp.asarray(labels[start:start + batch]) if cfg.model.num_classes else None
        e, i = _bounds(model, lik, k, params, x, y, jax.random.fold_in(key, start))
        elbos.append(np.asarray(e))
        iwaes.append(np.asarray(i))
    dims = int(np.prod(images.shape[1:]))
    neg_elbo, neg_iwae = -float(np.concatenate(elbos).mean()), -float(np.concatenate(iwaes).mean())
    return {"examples": len(images), "k": k, "neg_elbo_nats": neg_elbo, "neg_iwae_nats": neg_iwae,
            "neg_elbo_bits_per_dim": float(losses.bits_per_dim(neg_elbo, dims)),
            "neg_iwae_bits_per_dim": float(losses.bits_per_dim(neg_iwae, dims))}


def plan_eval(cfg: ml_collections.ConfigDict, state: VAEState, request: EvalRequest
              ) -> EvalPlan:
    """A VAE's `genart eval`: its likelihood bounds on the held-out split (default
    vae.eval_split) with K = vae.eval_samples, and sample quality only where asked for."""
    if request.temperature is not None:
        raise RequestError("--temperature applies to an hvae workdir")
    split = request.split or cfg.vae.eval_split
    k = request.samples or cfg.vae.eval_samples
    if k <= 0:
        raise RequestError(f"--samples must be positive, got {k}")
    if request.limit is not None and request.limit <= 0:
        raise RequestError(f"--limit must be positive, got {request.limit}")
    images, labels = read_split(cfg.data, split, request.limit, seed=request.subset_seed)
    total = split_length(cfg.data, split)
    r = dict(split=split, likelihood=cfg.vae.likelihood, split_images=total,
             subset_seed=request.subset_seed,
             **evaluate(cfg, state.params, images, labels, k=k))
    summary = (f"{split} split ({drawn(len(images), total, request.subset_seed)}, "
               f"{cfg.vae.likelihood} likelihood): -ELBO {r['neg_elbo_nats']:.2f} nats "
               f"({r['neg_elbo_bits_per_dim']:.4f} bits/dim); -IWAE(K={k}) "
               f"{r['neg_iwae_nats']:.2f} nats ({r['neg_iwae_bits_per_dim']:.4f} bits/dim)")
    return EvalPlan(r, summary, "VAE prior samples", split, request.metrics or ())
