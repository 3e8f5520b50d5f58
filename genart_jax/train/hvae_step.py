"""The per-device training step of the hierarchical VAE (`genart_jax.models.hvae`), trained as
VDVAE trains (Child 2021; reference code openai/vdvae, `train.py` `training_step`,
`train_helpers.py`): one body, run by either driver in `genart_jax.parallel`.

One iteration on this device's slice of the global batch (uint8 images):
1. the training pass z ~ q in every group, each example's noise keyed by its global index
   (`example_keys`), so 8 devices draw what 1 device draws;
2. the loss `hvae.loss_per_dim(hvae.elbo_terms(...))`: the mean negative ELBO in nats per
   dimension (the scale of VDVAE's clip and skip thresholds), gradients averaged over the data
   axis with `lax.pmean`;
3. the global gradient norm g (after the average, before clipping, as
   `torch.nn.utils.clip_grad_norm_` returns it); the gradients scaled by
   min(1, grad_clip / (g + 1e-6)) (VDVAE: 200);
4. the gradient skip: when g >= skip_threshold (VDVAE: 400; <= 0 disables) the update is not
   applied (params, optimizer state and EMA stay as they were) and `skipped_updates` counts it;
5. otherwise the optimizer update and the EMA of the weights,
   ema <- rate * ema + (1 - rate) * params (VDVAE's `update_ema`, after the update, only on an
   applied update);
6. the non-finite guard (`step_common.guard_nonfinite`) over every metric.

Departures from the reference:
- `ema_warmup` (off in HVAEStepConfig, 10 in the package's config `hvae.ema_warmup`): the EMA's
  rate ramps up as TensorFlow's ExponentialMovingAverage(num_updates) does, so a run of a few
  thousand updates samples from an EMA that is not still part initial weights.
- A non-finite loss or gradient is counted in `nonfinite_count` (the package's guard), not in
  `skipped_updates` as the reference's NaN check does; either way nothing is applied.
- The learning-rate schedule (`warmup_schedule`) is optax's, counted in applied updates: a
  skipped update does not advance the warm-up (the reference's scheduler steps every iteration;
  its Adam bias correction, like ours, counts applied updates only).
- Metrics are global means (`lax.pmean`), computed inside the compiled step; the reference
  averages per-rank statistics on the host.

Mixed precision is the model's: with `dtype=jnp.bfloat16` the blocks compute in bfloat16 while
parameters, gradients, the Gaussians' statistics, the KLs and the likelihood are float32.

Every piece is a top-level pure function of a frozen `HVAEStepConfig` and arrays, as the GAN
step: `hvae_loss`, `clip_and_skip`, `ema_update`, `hvae_step`; `make_hvae_step` binds them for
a driver; `init_hvae_state` and `make_hvae_optimizer` build what it steps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax import lax

from genart_jax.models import hvae
from genart_jax.train.step_common import example_keys, guard_nonfinite, named_key

PyTree = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Array = jax.Array


@flax.struct.dataclass
class HVAEState:
    step: jax.Array  # int32 scalar: completed iterations (applied, skipped or dropped)
    params: PyTree
    ema_params: PyTree  # exponential moving average of params, for sampling and evaluation
    opt_state: PyTree
    key: jax.Array  # base PRNG key; iteration s draws from fold_in(key, s)
    nonfinite_count: jax.Array  # int32: iterations dropped for NaN/Inf
    first_nonfinite_step: jax.Array  # int32: the first such iteration (1-based), 0 if none
    skipped_updates: jax.Array  # int32: iterations skipped for a gradient norm >= threshold


@dataclasses.dataclass(frozen=True)
class HVAEStepConfig:
    """What an HVAE step needs besides its arrays, fixed when the step is built.

    `grad_clip`: the global gradient norm is clipped to this (<= 0: no clipping).
    `skip_threshold`: an iteration whose gradient norm (before clipping) is >= this is skipped
    (<= 0: never). `ema_rate`: the EMA's weight on its old value (0: the EMA is the params).
    `ema_warmup` > 0: the EMA's rate at iteration t (0-based) is min(ema_rate, (1 + t) /
    (ema_warmup + t)) (TensorFlow's ExponentialMovingAverage with num_updates), so the EMA of a
    short run is not held back by the initial weights (0.999 keeps 13% of them after 2,000
    updates); 0 is VDVAE's constant rate.
    `bits`: the data's bit depth (8; VDVAE's FFHQ-256 uses 5). Defaults: VDVAE's CIFAR-10."""

    grad_clip: float = 200.0
    skip_threshold: float = 400.0
    ema_rate: float = 0.9999
    ema_warmup: int = 0
    bits: int = 8
    axis_name: str = "data"


def warmup_schedule(learning_rate: float, warmup_steps: int) -> optax.Schedule:
    """lr * min(1, count / warmup_steps): VDVAE's `linear_warmup` (0 at the first update);
    constant `learning_rate` when warmup_steps <= 0."""
    if warmup_steps <= 0:
        return optax.constant_schedule(learning_rate)
    return optax.linear_schedule(0.0, learning_rate, warmup_steps)


def make_hvae_optimizer(name: str = "adamw", learning_rate: float = 2e-4,
                        warmup_steps: int = 100, b1: float = 0.9, b2: float = 0.9,
                        eps: float = 1e-8, weight_decay: float = 0.01
                        ) -> optax.GradientTransformation:
    """AdamW (VDVAE's CIFAR-10 settings by default: lr 2e-4, betas (0.9, 0.9), weight decay
    0.01 on every parameter, decoupled and scaled by the learning rate as PyTorch's AdamW) or
    Adamax (`weight_decay` then added as decoupled decay the same way), with linear warm-up."""
    lr = warmup_schedule(learning_rate, warmup_steps)
    if name == "adamw":
        return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    if name == "adamax":
        if weight_decay:
            return optax.adamaxw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
        return optax.adamax(lr, b1=b1, b2=b2, eps=eps)
    raise ValueError(f"unknown hvae optimizer {name!r}; choose 'adamw' or 'adamax'")


def init_hvae_state(key: Array, model: hvae.HVAE, tx: optax.GradientTransformation
                    ) -> HVAEState:
    """Parameters from the model's initialiser (on a dummy uint8 batch), the optimizer state,
    the EMA as a copy of the parameters, zero counters."""
    init_key, noise_key, run_key = jax.random.split(key, 3)
    x = jnp.zeros((1, model.image_size, model.image_size, model.channels), jnp.uint8)
    params = model.init(init_key, x, key=noise_key)["params"]
    zero = jnp.zeros((), jnp.int32)
    return HVAEState(step=zero, params=params, ema_params=jax.tree.map(jnp.copy, params),
                     opt_state=tx.init(params), key=run_key, nonfinite_count=zero,
                     first_nonfinite_step=zero, skipped_updates=zero)


def hvae_loss(model: hvae.HVAE, params: PyTree, x: Array, keys: Array, bits: int = 8
              ) -> tuple[Array, tuple[dict[str, Array], Array]]:
    """(loss in nats per dimension, (ELBO terms per example, KL per group (N, G))) of uint8
    images x with one noise key per example."""
    out, kls = model.apply({"params": params}, x, key=keys)
    terms = hvae.elbo_terms(out, x, kls, bits=bits)
    return hvae.loss_per_dim(terms, x[0].size), (terms, kls)


def clip_and_skip(grads: PyTree, grad_clip: float, skip_threshold: float
                  ) -> tuple[PyTree, Array, Array]:
    """(gradients scaled to norm <= grad_clip, their norm before clipping, skip): as PyTorch's
    `clip_grad_norm_` (scale grad_clip / (norm + 1e-6) when below 1) and VDVAE's skip (apply
    only when norm < skip_threshold). A threshold <= 0 disables either."""
    norm = optax.tree.norm(grads)
    if grad_clip > 0:
        scale = jnp.minimum(1.0, grad_clip / (norm + 1e-6))
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    skip = norm >= skip_threshold if skip_threshold > 0 else jnp.zeros((), bool)
    return grads, norm, skip


def ema_rate(c: HVAEStepConfig, step: Array) -> Array | float:
    """The EMA's rate at iteration `step`: `ema_rate`, or with `ema_warmup` > 0 at most
    (1 + step) / (ema_warmup + step)."""
    if c.ema_warmup <= 0:
        return c.ema_rate
    t = step.astype(jnp.float32)
    return jnp.minimum(c.ema_rate, (1.0 + t) / (c.ema_warmup + t))


def ema_update(ema: PyTree, params: PyTree, rate: float) -> PyTree:
    """rate * ema + (1 - rate) * params, leaf by leaf (VDVAE's `update_ema`)."""
    return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema, params)


def hvae_step(model: hvae.HVAE, tx: optax.GradientTransformation, c: HVAEStepConfig,
              state: HVAEState, batch: Batch) -> tuple[HVAEState, Metrics]:
    """One iteration on this device's batch["image"], uint8 (1, local_batch, S, S, C) (the
    drivers' layout; labels, if any, are ignored). Metrics (global means): `loss` (nats per
    dimension), `bits_per_dim`, `distortion` and `rate` (nats per dimension: loss = distortion
    + rate), `kl_g{i}` (nats per image, group i, top group first), `grad_norm` (before
    clipping), `skipped_updates` and `nonfinite_count` (running counts)."""
    x = batch["image"][0]
    if x.dtype != jnp.uint8:
        raise TypeError(f"hvae step: images must be uint8, got {x.dtype}")
    num_dims = x[0].size
    key = named_key(jax.random.fold_in(state.key, state.step), "latents")
    keys = example_keys(key, x.shape[0], c.axis_name)
    grad_fn = jax.value_and_grad(functools.partial(hvae_loss, model, bits=c.bits), has_aux=True)
    (loss, (terms, kls)), grads = grad_fn(state.params, x, keys)
    grads = lax.pmean(grads, c.axis_name)
    grads, grad_norm, skip = clip_and_skip(grads, c.grad_clip, c.skip_threshold)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(state.ema_params, params, ema_rate(c, state.step))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(skip, o, n), new, old)
    updated = state.replace(params=keep(params, state.params),
                            opt_state=keep(opt_state, state.opt_state),
                            ema_params=keep(ema, state.ema_params),
                            skipped_updates=state.skipped_updates + skip.astype(jnp.int32))

    metrics = {"loss": loss, "distortion": jnp.mean(terms["distortion"]) / num_dims,
               "rate": jnp.mean(terms["rate"]) / num_dims,
               "bits_per_dim": jnp.mean(terms["bits_per_dim"])}
    metrics.update({f"kl_g{i}": v for i, v in enumerate(jnp.mean(kls, axis=0))})
    metrics = lax.pmean(metrics, c.axis_name)
    metrics["grad_norm"] = grad_norm
    state, metrics = guard_nonfinite(state, updated, metrics)
    return state, dict(metrics, skipped_updates=state.skipped_updates.astype(jnp.float32))


def make_hvae_step(model: hvae.HVAE, tx: optax.GradientTransformation,
                   config: HVAEStepConfig | None = None
                   ) -> Callable[[HVAEState, Batch], tuple[HVAEState, Metrics]]:
    """`step(state, batch) -> (state, metrics)` for one device of a driver in
    `genart_jax.parallel` (axis `config.axis_name`)."""
    return functools.partial(hvae_step, model, tx, config or HVAEStepConfig())
