"""The GAN family: models + optimizers + step wired to a driver, its state's shapes, and the
grids it writes."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np

from genart_jax import sampling
from genart_jax.augment import parse_policy
from genart_jax.models import build_gan
from genart_jax.models.registry import architecture_of
from genart_jax.parallel import DATA, check_batch_divisible, make_driver, unroll_fused_steps
from genart_jax.train.gan_step import make_gan_step
from genart_jax.train.optim import make_optimizer
from genart_jax.train.state import GANState, init_gan_state

PROGRESS = ("d_loss", "g_loss")


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
