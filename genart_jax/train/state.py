"""The GAN training state: one immutable pytree holding everything a run needs to continue."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class GANState:
    step: jax.Array  # int32 scalar: completed iterations
    g_params: PyTree
    d_params: PyTree
    g_batch_stats: PyTree  # {} for models without BatchNorm
    d_batch_stats: PyTree
    g_opt_state: PyTree
    d_opt_state: PyTree
    ema_g_params: PyTree  # exponential moving average of g_params, used for sampling
    key: jax.Array  # base PRNG key; step s draws from fold_in(key, s)
    nonfinite_count: jax.Array  # int32: iterations whose update was dropped for NaN/Inf
    first_nonfinite_step: jax.Array  # int32: the first such iteration (1-based), 0 if none
    ada_p: jax.Array  # float32: adaptive augmentation probability for the next iteration


def init_gan_state(key: jax.Array, generator: nn.Module, discriminator: nn.Module,
                   g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                   *, latent_dim: int, image_shape: tuple[int, int, int],
                   num_classes: int = 0, ada_p: float = 0.0) -> GANState:
    """Initialise params (eval mode, no axis needed), optimizer states and the EMA copy;
    `num_classes > 0` for class-conditional models (labels in); `ada_p` the initial
    augmentation probability."""
    g_key, d_key, run_key = jax.random.split(key, 3)
    z = jnp.zeros((2, latent_dim), jnp.float32)
    x = jnp.zeros((2, *image_shape), jnp.float32)
    y = jnp.zeros((2,), jnp.int32) if num_classes else None
    g_vars = generator.init(g_key, z, y, train=False)
    d_vars = discriminator.init(d_key, x, y, train=False)
    g_params, d_params = g_vars["params"], d_vars["params"]
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_batch_stats=g_vars.get("batch_stats", {}),
        d_batch_stats=d_vars.get("batch_stats", {}),
        g_opt_state=g_tx.init(g_params),
        d_opt_state=d_tx.init(d_params),
        ema_g_params=jax.tree.map(jnp.copy, g_params),
        key=run_key,
        nonfinite_count=jnp.zeros((), jnp.int32),
        first_nonfinite_step=jnp.zeros((), jnp.int32),
        ada_p=jnp.asarray(ada_p, jnp.float32),
    )


@flax.struct.dataclass
class VAEState:
    step: jax.Array
    params: PyTree
    opt_state: PyTree
    key: jax.Array
    nonfinite_count: jax.Array
    first_nonfinite_step: jax.Array


def init_vae_state(key: jax.Array, model: nn.Module, tx: optax.GradientTransformation, *,
                   image_shape: tuple[int, int, int], num_classes: int) -> VAEState:
    init_key, run_key = jax.random.split(key)
    x = jnp.zeros((2, *image_shape), jnp.float32)
    y = jnp.zeros((2,), jnp.int32) if num_classes else None
    params = model.init(init_key, x, y)["params"]
    return VAEState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    key=run_key, nonfinite_count=jnp.zeros((), jnp.int32),
                    first_nonfinite_step=jnp.zeros((), jnp.int32))
