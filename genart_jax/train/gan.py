"""The GAN family's hooks (`train.families`): models + optimizers + step, its state's shapes,
the grids it writes, the variables it samples and exports, and what `genart sample` and
`genart eval` do with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from genart_jax import sampling
from genart_jax.augment import parse_policy
from genart_jax.metrics import METRICS
from genart_jax.models import build_gan
from genart_jax.models.registry import architecture_of
from genart_jax.parallel import DATA, check_batch_divisible, make_driver, unroll_fused_steps
from genart_jax.train.gan_step import make_gan_step
from genart_jax.train.optim import make_optimizer
from genart_jax.train.requests import EvalPlan, EvalRequest, RequestError, SampleRequest, Written
from genart_jax.train.state import GANState, init_gan_state

PROGRESS = ("d_loss", "g_loss")
PyTree = Any


def _parts(cfg: ml_collections.ConfigDict, axis_name: str | None):
    generator, discriminator = build_gan(cfg.model, cfg.data, axis_name=axis_name)
    g_tx, d_tx = make_optimizer(cfg.g_optimizer), make_optimizer(cfg.d_optimizer)
    image_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)

    def init_fn(key: jax.Array) -> GANState:
        return init_gan_state(key, generator, discriminator, g_tx, d_tx,
                              latent_dim=cfg.model.latent_dim, image_shape=image_shape,
                              num_classes=cfg.model.num_classes,
                              ada_p=cfg.augment.ada_p if cfg.augment.ada else 0.0)

    return generator, discriminator, g_tx, d_tx, init_fn


def build_training(cfg: ml_collections.ConfigDict, devices=None, steps_per_call: int = 1):
    """(driver, init_fn) for a GAN config."""
    generator, discriminator, g_tx, d_tx, init_fn = _parts(cfg, DATA)
    step = make_gan_step(
        generator, discriminator, g_tx, d_tx, latent_dim=cfg.model.latent_dim,
        num_classes=cfg.model.num_classes, global_batch=cfg.train.batch_size,
        g_loss=cfg.train.g_loss, gan_loss=cfg.train.gan_loss, r1_gamma=cfg.train.r1_gamma,
        r2_gamma=cfg.train.r2_gamma, penalty_every=cfg.train.penalty_every,
        ada=cfg.augment.ada, ada_target=cfg.augment.ada_target, ada_kimg=cfg.augment.ada_kimg,
        ada_p_max=cfg.augment.ada_p_max,
        d_steps=cfg.train.d_steps, g_steps=cfg.train.g_steps,
        ema_halflife_kimg=cfg.train.ema_halflife_kimg, ema_rampup=cfg.train.ema_rampup,
        diffaugment=parse_policy(cfg.augment.diffaugment), flip=cfg.augment.flip,
        axis_name=DATA)
    convolutional = architecture_of(cfg).convolutional
    driver = make_driver(cfg.train.driver, step, devices, steps_per_call=steps_per_call,
                         unroll=unroll_fused_steps(convolutional=convolutional))
    check_batch_divisible(cfg.train.batch_size, driver.num_devices, jax.process_count())
    return driver, init_fn


def abstract_state(cfg: ml_collections.ConfigDict) -> GANState:
    return jax.eval_shape(_parts(cfg, None)[-1], jax.random.PRNGKey(0))


def write_samples(cfg: ml_collections.ConfigDict, state: GANState, path: Path,
                  real: np.ndarray | None = None, themes: list[int] | None = None
                  ) -> list[Path]:
    """The sample grid of a host-side state at `path`; a conditional model's grid has one
    theme per column (default: every class)."""
    del real
    params, stats = sampling.generator_variables(cfg, state, cfg.sample.use_ema)
    grid = sampling.sample_grid(cfg, params, stats, num=cfg.sample.num, seed=cfg.sample.seed,
                                themes=themes)
    return [sampling.save_png(grid, path)]


def variables(cfg: ml_collections.ConfigDict, state: GANState, use_ema: bool = True
              ) -> tuple[PyTree, PyTree, bool]:
    """(params, batch_stats, EMA or not) that sampling and export use: the EMA weights with
    recalibrated BatchNorm statistics by default."""
    params, stats = sampling.generator_variables(cfg, state, use_ema)
    return params, stats, use_ema


generate = sampling.generate  # (cfg, params, batch_stats, *, num, seed) -> images


def sample_latents(request: SampleRequest, dim: int) -> tuple[jax.Array, int | None]:
    """(latents, grid columns) of a sample request: seeded (or interpolation strips), then
    truncation, then the direction (a GAN's latents, and an hvae's top group in standard form:
    `hvae.TopGroupLatents`)."""
    if request.num <= 0 or request.frames < 2:
        raise RequestError("--num must be positive and --frames at least 2")
    ncols = None
    if request.interpolate:
        ncols = request.frames
        z = sampling.interpolation_latents(request.seed, max(1, request.num // ncols), ncols,
                                           dim)
    else:
        z = sampling.latents(request.seed, request.num, dim)
    if request.truncation is not None:
        z = sampling.truncate(z, request.truncation)
    if request.direction:
        try:
            d = np.load(request.direction, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise RequestError(f"cannot read --direction {request.direction}: {e}") from e
        if d.shape != (dim,):
            raise RequestError(f"--direction {request.direction} has shape {d.shape}; this "
                               f"model's latents are ({dim},)")
        z = sampling.apply_direction(z, d, request.strength)
    return z, ncols


def sample(cfg: ml_collections.ConfigDict, params: PyTree, stats: PyTree,
           request: SampleRequest, out: str | Path) -> Written:
    """The grid of a sample request at `out`: a theme per column of a conditional model (per
    interpolation strip with `interpolate`)."""
    if request.temperature is not None:
        raise RequestError("--temperature applies to an hvae; a GAN takes --truncation")
    z, ncols = sample_latents(request, cfg.model.latent_dim)
    num_classes, themes = cfg.model.num_classes, request.themes
    labels, theme_cols = sampling.theme_labels(len(z), num_classes, themes)
    if request.interpolate and labels is not None:  # one theme per interpolation strip
        labels = np.repeat(sampling.theme_labels(len(z) // ncols, num_classes, themes)[0], ncols)
    try:
        images = sampling.generate_from_latents(cfg, params, stats, z, labels)
    except ValueError as e:
        raise RequestError(str(e)) from e
    path = sampling.save_png(sampling.image_grid(images, ncols or theme_cols), out)
    what = ""
    if num_classes:
        what = f", one theme per column: {','.join(map(str, themes or range(num_classes)))}"
    return Written(len(z), f"{request.weights} generator{what}", [path])


def plan_eval(cfg: ml_collections.ConfigDict, state: GANState, request: EvalRequest
              ) -> EvalPlan:
    """A GAN's `genart eval`: its samples against the held-out split (default 'test') in every
    metric unless fewer are asked for."""
    del cfg, state
    if request.temperature is not None:
        raise RequestError("--temperature applies to an hvae workdir")
    if request.samples is not None:
        raise RequestError("--samples is the K of a VAE's IWAE bound; use --num for the number "
                           "of generated images")
    weights = "EMA" if request.use_ema else "raw"
    return EvalPlan({"ema": request.use_ema}, None, f"{weights} generator samples",
                    request.split or "test", request.metrics or METRICS)


class GeneratorLatents:
    """A GAN's generator as a generator of steerable latents (`Family.latent_generator`):
    z (N, model.latent_dim) -> `sampling.generate_from_latents` (labels for a conditional
    model). It has no temperature."""

    distillable = True  # feedback's --finetune distils this generator

    def __init__(self, cfg: ml_collections.ConfigDict, params: PyTree, batch_stats: PyTree):
        self.cfg, self.params, self.stats = cfg, params, batch_stats
        self.latent_dim = int(cfg.model.latent_dim)
        self.conditional = cfg.model.num_classes > 0
        self.temperature = None

    def __call__(self, z: np.ndarray, labels: np.ndarray | None = None,
                 temperature=None) -> np.ndarray:
        if temperature is not None:
            raise ValueError("a temperature applies to an hvae; a GAN takes truncation")
        return sampling.generate_from_latents(self.cfg, self.params, self.stats, z, labels)


def latent_generator(cfg: ml_collections.ConfigDict, params: PyTree, batch_stats: PyTree,
                     temperature=None) -> GeneratorLatents:
    """The `Family.latent_generator` hook of a GAN (a temperature is a ValueError)."""
    if temperature is not None:
        raise ValueError("a temperature applies to an hvae; a GAN takes truncation")
    return GeneratorLatents(cfg, params, batch_stats)
