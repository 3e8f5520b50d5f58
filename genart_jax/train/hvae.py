"""The hierarchical VAE's hooks (`train.families`, `model.arch="hvae"`): its model, optimizer
and step on a driver, its state's shapes, the grids it writes (prior samples at the configured
temperature; reconstructions from the posterior's top groups), the weights it samples and
exports (the EMA by default), and its evaluation (negative ELBO in bits per dimension of the
8-bit data, on a held-out split).

Images stay uint8 from the data pipeline to the model (the DMoL likelihood is over pixel
values); images that leave these hooks for grids and metrics are in [-1, 1] as everywhere else.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from genart_jax import dmol, sampling
from genart_jax.config import apply_overrides
from genart_jax.data.convert import to_model_range_np
from genart_jax.data.pipeline import read_split, read_split_pixels, split_length
from genart_jax.models import hvae
from genart_jax.models.registry import architecture_of
from genart_jax.parallel import DATA, check_batch_divisible, make_driver, unroll_fused_steps
from genart_jax.train.hvae_step import (
    HVAEState,
    HVAEStepConfig,
    init_hvae_state,
    make_hvae_optimizer,
    make_hvae_step,
)
from genart_jax.train.requests import (
    EvalPlan,
    EvalRequest,
    RequestError,
    SampleRequest,
    Written,
    drawn,
)

PROGRESS = ("bits_per_dim", "rate")
PyTree = Any
CHUNK = 256  # images per compiled sampling call (bounded memory for FID's thousands)


def build_model(cfg: ml_collections.ConfigDict) -> hvae.HVAE:
    arch = architecture_of(cfg)
    return arch.build(arch.settings(cfg.model), cfg)


def make_optimizer(cfg: ml_collections.ConfigDict):
    h = cfg.hvae
    return make_hvae_optimizer(h.optimizer, h.learning_rate, h.warmup_steps, h.b1, h.b2, h.eps,
                               h.weight_decay)


def step_config(cfg: ml_collections.ConfigDict) -> HVAEStepConfig:
    h = cfg.hvae
    return HVAEStepConfig(grad_clip=h.grad_clip, skip_threshold=h.skip_threshold,
                          ema_rate=h.ema_rate, ema_warmup=h.ema_warmup, axis_name=DATA)


def _init_fn(cfg: ml_collections.ConfigDict):
    model, tx = build_model(cfg), make_optimizer(cfg)
    return model, tx, lambda key: init_hvae_state(key, model, tx)


def build_training(cfg: ml_collections.ConfigDict, devices=None, steps_per_call: int = 1):
    """(driver, init_fn) for an HVAE config."""
    model, tx, init_fn = _init_fn(cfg)
    step = make_hvae_step(model, tx, step_config(cfg))
    driver = make_driver(cfg.train.driver, step, devices, steps_per_call=steps_per_call,
                         unroll=unroll_fused_steps(True))
    check_batch_divisible(cfg.train.batch_size, driver.num_devices, jax.process_count())
    return driver, init_fn


def abstract_state(cfg: ml_collections.ConfigDict) -> HVAEState:
    return jax.eval_shape(_init_fn(cfg)[-1], jax.random.PRNGKey(0))


# ---------------------------------------------------------------------------------------------
# temperatures and images


def temperatures(model: hvae.HVAE, values) -> np.ndarray:
    """One temperature per latent group from one value or one per group (a RequestError
    otherwise, naming the count)."""
    t = np.asarray(values, np.float32).reshape(-1)
    if t.size == 1:
        t = np.full(model.num_groups, t[0], np.float32)
    if t.shape != (model.num_groups,):
        raise RequestError(f"give one temperature or one per latent group ({model.num_groups} "
                           f"for this model), got {t.size}")
    if (t < 0).any():
        raise RequestError(f"temperatures must be >= 0, got {t.min()}")
    return t


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample(model, greedy, params, keys, temps):
    """uint8 (n, S, S, C) from the prior, image i from keys[i] alone (its latents and its
    pixels)."""
    z_keys, px_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    out = model.apply({"params": params}, keys.shape[0], key=z_keys, temperature=temps,
                      method=model.sample)
    one = lambda k, p: dmol.sample(k, p[None], model.channels, greedy=greedy)[0]
    return jax.vmap(one)(px_keys, out)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _reconstruct(model, groups, greedy, params, x, key, temps):
    return hvae.reconstruct_images(model, {"params": params}, x, key, num_groups=groups,
                                   temperature=temps, greedy_pixels=greedy)


def prior_images(cfg: ml_collections.ConfigDict, params: PyTree, *, num: int, seed: int,
                 temperature=None) -> np.ndarray:
    """`num` samples in [-1, 1] (N, S, S, C), pixels as `hvae.pixels`, in chunks of CHUNK:
    image i from fold_in(PRNGKey(seed), i) alone, so sample i depends only on (seed, i) (a
    grid of 16 is the start of a draw of 10,000)."""
    model = build_model(cfg)
    temps = jnp.asarray(temperatures(model, cfg.hvae.temperature if temperature is None
                                     else temperature))
    key, out = jax.random.PRNGKey(seed), []
    for start in range(0, num, CHUNK):
        n = min(CHUNK, num - start)
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(start, start + n))
        out.append(np.asarray(_sample(model, cfg.hvae.pixels == "greedy", params, keys,
                                      temps)))
    return to_model_range_np(np.concatenate(out))


def reconstruction_rows(cfg: ml_collections.ConfigDict, params: PyTree, x: np.ndarray,
                        seed: int = 0, temperature=None) -> tuple[np.ndarray, list[int]]:
    """Rows (all in [-1, 1]): the images x, then their reconstructions from the posterior's
    latents in the top k groups (the prior's below, at the temperature) for k = all groups,
    half, a quarter, ..., 1: how much of a picture the top of the hierarchy holds."""
    model = build_model(cfg)
    temps = jnp.asarray(temperatures(model, cfg.hvae.temperature if temperature is None
                                     else temperature))
    g = model.num_groups
    ks = sorted({max(1, g >> i) for i in range(4)} | {1}, reverse=True)
    xs = jnp.asarray(x)
    greedy = cfg.hvae.pixels == "greedy"
    rows = [x] + [to_model_range_np(np.asarray(_reconstruct(
        model, k, greedy, params, xs, jax.random.PRNGKey(seed), temps))) for k in ks]
    return np.concatenate(rows), ks


def write_samples(cfg: ml_collections.ConfigDict, state: HVAEState, path: Path,
                  real: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
                  themes: list[int] | None = None) -> list[Path]:
    """The grids of a training state at `path` (EMA weights as `sample.use_ema`)."""
    del themes
    params = state.ema_params if cfg.sample.use_ema else state.params
    x = real[0] if isinstance(real, tuple) else real
    return write_grids(cfg, params, path, x)


def write_grids(cfg: ml_collections.ConfigDict, params: PyTree, path: str | Path,
                real: np.ndarray | None = None, num: int | None = None,
                seed: int | None = None, temperature=None) -> list[Path]:
    """Prior samples at `path`; with real images ([-1, 1]) also PATH_reconstructions.png: the
    images, then rows reconstructed from the top k latent groups (`reconstruction_rows`)."""
    path = Path(path)
    num = cfg.sample.num if num is None else num
    seed = cfg.sample.seed if seed is None else seed
    images = prior_images(cfg, params, num=num, seed=seed, temperature=temperature)
    written = [sampling.save_png(sampling.image_grid(images), path)]
    if real is not None and len(real):
        x = np.asarray(real[:8])
        rows, _ = reconstruction_rows(cfg, params, x, seed, temperature)
        grid = sampling.image_grid(rows, ncols=len(x))
        written.append(sampling.save_png(grid, path.with_name(path.stem +
                                                              "_reconstructions.png")))
    return written


def variables(cfg: ml_collections.ConfigDict, state: HVAEState, use_ema: bool = True
              ) -> tuple[PyTree, PyTree, bool]:
    """(the EMA of the weights, or the raw weights; no statistics; EMA or not)."""
    del cfg
    return (state.ema_params if use_ema else state.params), {}, use_ema


def generate(cfg: ml_collections.ConfigDict, params: PyTree, batch_stats: PyTree, *, num: int,
             seed: int) -> np.ndarray:
    """`num` prior samples at `hvae.temperature`, in [-1, 1] (for sample-quality metrics)."""
    del batch_stats
    return prior_images(cfg, params, num=num, seed=seed)


def sample(cfg: ml_collections.ConfigDict, params: PyTree, stats: PyTree,
           request: SampleRequest, out: str | Path) -> Written:
    """Prior samples at the request's temperature (default `hvae.temperature`) at `out`, and
    reconstructions of held-out images from the top groups beside. With --truncation,
    --interpolate or --direction, the top group's latents are steered as a GAN's
    (`TopGroupLatents`: truncation is the top group's temperature, the lower groups one fixed
    draw at the temperature)."""
    del stats
    if request.themes:
        raise RequestError("--theme needs a conditional model; an hvae is unconditional")
    if request.num <= 0:
        raise RequestError(f"--num must be positive, got {request.num}")
    temperature = request.temperature or cfg.hvae.temperature
    model = build_model(cfg)
    temps = temperatures(model, temperature)
    shown = (f"{temps[0]:g}" if np.all(temps == temps[0])
             else "per group " + ",".join(f"{t:g}" for t in temps))
    if request.interpolate or request.direction or request.truncation is not None:
        return _steered_sample(cfg, params, request, temps, shown, out)
    real = read_split(cfg.data, cfg.hvae.eval_split, 8)[0]
    paths = write_grids(cfg, params, out, real, num=request.num, seed=request.seed,
                        temperature=temps)
    return Written(request.num, f"{request.weights} HVAE prior, temperature {shown}", paths,
                   f"; reconstructions of {cfg.hvae.eval_split} images from the top latent "
                   f"groups to {', '.join(map(str, paths[1:]))}")


# ---------------------------------------------------------------------------------------------
# evaluation


@functools.partial(jax.jit, static_argnums=0)
def _terms(model, params, x, key):
    out, kls = model.apply({"params": params}, x, key=jax.random.split(key, x.shape[0]))
    terms = hvae.elbo_terms(out, x, kls)
    return terms["distortion"], terms["rate"], kls


def evaluate(cfg: ml_collections.ConfigDict, params: PyTree, images: np.ndarray, *,
             samples: int = 1, seed: int = 0, batch: int = 100, progress: bool = True
             ) -> dict[str, Any]:
    """The negative ELBO of uint8 `images` (each a mean over `samples` posterior draws):
    nats per image, bits per dimension (-ELBO / (H W C ln 2)), its distortion and rate, and the
    KL of each latent group (nats per image, top group first)."""
    model = build_model(cfg)
    key, dist, rate, kls = jax.random.PRNGKey(seed), [], [], []
    for start in tqdm(range(0, len(images), batch), disable=not progress, desc="eval",
                      unit="batch"):
        x = jnp.asarray(images[start:start + batch])
        d = r = k = 0.0
        for s in range(samples):
            di, ri, ki = _terms(model, params, x, jax.random.fold_in(key, start * samples + s))
            d, r, k = d + np.asarray(di), r + np.asarray(ri), k + np.asarray(ki)
        dist.append(d / samples)
        rate.append(r / samples)
        kls.append(k / samples)
    d, r, k = np.concatenate(dist), np.concatenate(rate), np.concatenate(kls)
    dims, neg_elbo = int(np.prod(images.shape[1:])), float(np.mean(d + r))
    return {"examples": len(images), "elbo_samples": samples, "neg_elbo_nats": neg_elbo,
            "neg_elbo_bits_per_dim": neg_elbo / (dims * math.log(2.0)),
            "distortion_bits_per_dim": float(np.mean(d)) / (dims * math.log(2.0)),
            "rate_bits_per_dim": float(np.mean(r)) / (dims * math.log(2.0)),
            "kl_per_group_nats": [float(v) for v in k.mean(axis=0)]}


def plan_eval(cfg: ml_collections.ConfigDict, state: HVAEState, request: EvalRequest
              ) -> EvalPlan:
    """An HVAE's `genart eval`: bits/dim of the held-out split (default hvae.eval_split) with
    the EMA weights (or raw), each image's ELBO averaged over --samples draws (default 1), and
    sample quality only where asked for, at the request's temperature (default
    hvae.temperature)."""
    if request.temperature is not None:
        temperatures(build_model(cfg), request.temperature)  # one, or one per group
        cfg = apply_overrides(cfg, {"hvae.temperature": repr(tuple(request.temperature))})
    split = request.split or cfg.hvae.eval_split
    samples = request.samples or 1
    if samples <= 0:
        raise RequestError(f"--samples must be positive, got {samples}")
    if request.limit is not None and request.limit <= 0:
        raise RequestError(f"--limit must be positive, got {request.limit}")
    params = variables(cfg, state, request.use_ema)[0]
    images, _ = read_split_pixels(cfg.data, split, request.limit, request.subset_seed)
    total = split_length(cfg.data, split)
    r = dict(split=split, ema=request.use_ema, split_images=total,
             subset_seed=request.subset_seed, temperature=list(cfg.hvae.temperature),
             pixels=cfg.hvae.pixels,
             **evaluate(cfg, params, images, samples=samples))
    summary = (f"{split} split ({drawn(len(images), total, request.subset_seed)}, "
               f"{'EMA' if request.use_ema else 'raw'} weights): -ELBO "
               f"{r['neg_elbo_nats']:.1f} nats = {r['neg_elbo_bits_per_dim']:.4f} bits/dim "
               f"(distortion {r['distortion_bits_per_dim']:.4f} + rate "
               f"{r['rate_bits_per_dim']:.4f})")
    weights = "EMA" if request.use_ema else "raw"
    return EvalPlan(r, summary, f"{weights} HVAE prior samples", split, request.metrics or (),
                    config=cfg)


# ---------------------------------------------------------------------------------------------
# steering: images from the top group's latents (feedback sessions, directions, the studio)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _steered(model, n, params, top, temps, key):
    """uint8 images of n given top-group latents: every example's lower groups drawn with the
    same `key` (so an image does not depend on its place in the batch), the pixels the DMoL's
    mode (greedy, as reconstructions: no pixel noise, which a fixed key would print as the
    same speckle on every image)."""
    out = model.apply({"params": params}, n, key=jnp.broadcast_to(key, (n, *key.shape)),
                      temperature=temps, latents=(top,), method=model.sample)
    return dmol.sample(key, out, model.channels, greedy=True)


def top_prior(model: hvae.HVAE, params: PyTree) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each (r, r, zdim), of the top group's prior p(z_top): its prior block's
    output on the decoder's starting state (read with Flax's capture_intermediates, so it is
    what `model.sample` computes)."""
    _, state = model.apply({"params": params}, 1, key=jax.random.PRNGKey(0),
                           method=model.sample, capture_intermediates=True,
                           mutable=["intermediates"])
    feats = state["intermediates"]["decoder_0"]["prior"]["__call__"][0][0]
    mean, log_std = np.split(np.asarray(feats[..., :2 * model.zdim], np.float32), 2, axis=-1)
    return mean, np.exp(log_std)


class TopGroupLatents:
    """An HVAE as a generator of steerable latents (`Family.latent_generator`): a latent u
    (N, latent_dim), latent_dim = r * r * zdim of the top group, is that group's prior draw at
    temperature 1 in standard form, z_top = mean + std * u (`top_prior`), so u ~ N(0, I) is
    the prior and truncation toward 0 is the top group's temperature. The lower groups are
    drawn from the prior at `temperature` (default `hvae.temperature`) with ONE FIXED key
    (PRNGKey(noise_seed)), the same for every image, and the pixels are the DMoL's mode
    (greedy, as the reconstructions): the same u always gives the same image, in any batch,
    and a small step in u is a small change of the picture. A different noise_seed is a
    different fixed draw of the details."""

    conditional = False
    distillable = False  # feedback's --finetune distils a GAN generator

    def __init__(self, cfg: ml_collections.ConfigDict, params: PyTree, temperature=None,
                 noise_seed: int = 0):
        self.cfg, self.params, self.model = cfg, params, build_model(cfg)
        self.shape = tuple(self.model.latent_shapes()[0])
        self.latent_dim = int(np.prod(self.shape))
        self.mean, self.std = top_prior(self.model, params)
        self.temperature = temperatures(self.model, cfg.hvae.temperature if temperature is None
                                        else temperature)
        self.key = jax.random.PRNGKey(noise_seed)

    def __call__(self, z: np.ndarray, labels: np.ndarray | None = None,
                 temperature=None) -> np.ndarray:
        """Images (N, S, S, C) in [-1, 1] of latents u (N, latent_dim); `temperature` (one
        value or one per group) replaces the default for this call."""
        if labels is not None:
            raise ValueError("labels need a conditional model; an hvae is unconditional")
        u = np.asarray(z, np.float32)
        if u.ndim != 2 or u.shape[1] != self.latent_dim or not len(u):
            raise ValueError(f"latents must be (N > 0, {self.latent_dim}), got {u.shape}")
        if isinstance(temperature, np.ndarray | jax.Array):
            temperature = tuple(np.ravel(temperature).tolist())
        temps = (self.temperature if temperature is None
                 else temperatures(self.model, temperature))
        top = self.mean + self.std * u.reshape(len(u), *self.shape)
        out = _steered(self.model, len(u), self.params, jnp.asarray(top), jnp.asarray(temps),
                       self.key)
        return to_model_range_np(np.asarray(out))


def latent_generator(cfg: ml_collections.ConfigDict, params: PyTree, batch_stats: PyTree,
                     temperature=None) -> TopGroupLatents:
    """The `Family.latent_generator` hook: steering over the top group (`TopGroupLatents`)."""
    del batch_stats
    return TopGroupLatents(cfg, params, temperature)


def _steered_sample(cfg: ml_collections.ConfigDict, params: PyTree, request: SampleRequest,
                    temps: np.ndarray, shown: str, out: str | Path) -> Written:
    """`genart sample` with a GAN's latent options, over the top group (`TopGroupLatents`)."""
    from genart_jax.train.gan import sample_latents

    generator = TopGroupLatents(cfg, params, temps)
    z, ncols = sample_latents(request, generator.latent_dim)
    path = sampling.save_png(sampling.image_grid(generator(np.asarray(z)), ncols), out)
    return Written(len(z), f"{request.weights} HVAE, top group steered, lower groups at "
                           f"temperature {shown}", [path])
