"""The per-device GAN train step: one body, run by either driver in `genart_jax.parallel`.

The body is written for one device of a data-parallel group whose axis is `axis_name`: it sees
its slice of the global batch, computes local gradients and averages them with `lax.pmean`
(BatchNorm averages its statistics over the same axis inside the models). Latent noise (and,
for a class-conditional GAN, the fake images' labels) is drawn per example from the example's
global index, so the numbers do not depend on the device count. Real images go to a conditional
discriminator with their own labels (`batch["label"]`).

One iteration = `d_steps` discriminator updates, then `g_steps` generator updates. The
generator forward pass of the last D update is linearised once (`jax.vjp`) and reused by the
first G update, as PyTorch's DCGAN reuses its one forward: no second generator forward.

Every piece is a top-level pure function of a frozen `GANStepConfig` (what `make_gan_step`
builds once from the config) and arrays: `augment` (what D sees of an image), `d_view`,
`d_loss_terms` (the registered adversarial loss, `losses.GAN_LOSSES`, plus R1/R2), `d_update`,
`g_forward`, `g_loss_terms`, `g_update`, `next_ada_p` (the ADA controller) and `gan_step`, the
iteration. Random draws come from `step_common.named_key(key, name, index)`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from genart_jax import losses
from genart_jax.augment import ada_adjust, ada_batch, augment_batch, flip_batch, overfitting_signal
from genart_jax.data.convert import to_model_range
from genart_jax.train.state import GANState
from genart_jax.train.step_common import apply_train, example_keys, guard_nonfinite, named_key

PyTree = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Array = jax.Array


def latent_noise(key: Array, local_batch: int, latent_dim: int, axis_name: str) -> Array:
    """Standard normal latents for this device's examples, keyed by global example index."""
    keys = example_keys(key, local_batch, axis_name)
    return jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys)


def fake_labels(key: Array, local_batch: int, num_classes: int, axis_name: str) -> Array:
    """Uniform class labels (int32) for this device's generated examples, keyed by global
    example index like `latent_noise`."""
    keys = example_keys(key, local_batch, axis_name)
    return jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes, jnp.int32))(keys)


def ema_decay(step: Array, batch_size: int, halflife_kimg: float, rampup: float) -> Array:
    """Per-step EMA weight for a half-life in images, shortened early on by a ramp-up
    (StyleGAN2-ADA: half-life <= rampup * images seen)."""
    seen = (step + 1).astype(jnp.float32) * batch_size
    half = jnp.float32(halflife_kimg * 1000.0)
    if rampup > 0:
        half = jnp.minimum(half, seen * rampup)
    return jnp.where(half > 0, 0.5 ** (batch_size / jnp.maximum(half, 1e-8)), 0.0)


@dataclasses.dataclass(frozen=True)
class GANStepConfig:
    """Everything a GAN step needs besides its arrays, fixed when the step is built.

    `diffaugment` (policy names) augments real and generated images before every D pass;
    `flip` flips real images at random; `ada` ("adaptive" or "fixed") applies
    `genart_jax.augment.ada_augment` with probability `state.ada_p`, which "adaptive" steers
    toward E[sign(D(real))] = `ada_target`. `gan_loss` names an objective in
    `losses.GAN_LOSSES` (with "minimax", G's term is `g_loss`). `r1_gamma`/`r2_gamma` add
    gamma / 2 * E||grad_x D||^2 on real / generated images (gradients of D through the
    augmentation, at the un-augmented image, as R3GAN's code), every `penalty_every`
    iterations weighted by `penalty_every` (lazy, as StyleGAN2)."""
    generator: nn.Module
    discriminator: nn.Module
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    latent_dim: int
    global_batch: int
    num_classes: int = 0
    g_loss: str = "non_saturating"
    gan_loss: str = "minimax"
    r1_gamma: float = 0.0
    r2_gamma: float = 0.0
    penalty_every: int = 1
    d_steps: int = 1
    g_steps: int = 1
    ema_halflife_kimg: float = 10.0
    ema_rampup: float = 0.05
    diffaugment: tuple[str, ...] = ()
    flip: bool = False
    ada: str = ""
    ada_target: float = 0.6
    ada_kimg: float = 500.0
    ada_p_max: float = 0.8
    axis_name: str = "data"

    def __post_init__(self):
        if self.g_loss not in losses.GENERATOR_LOSSES:
            raise ValueError(f"unknown generator loss {self.g_loss!r}")
        losses.gan_loss(self.gan_loss)  # a ValueError naming the registered ones
        if self.ada not in ("", "adaptive", "fixed"):
            raise ValueError(f"unknown ada mode {self.ada!r}; choose '', 'adaptive' or 'fixed'")

    @property
    def objective(self) -> losses.GANLoss:
        return losses.gan_loss(self.gan_loss)

    @property
    def penalised(self) -> bool:
        return self.r1_gamma > 0 or self.r2_gamma > 0


def augment(c: GANStepConfig, x: Array, key: Array, real: bool, p: Array) -> Array:
    """What D sees of `x`: flips (real), ADA's ops with probability p, DiffAugment."""
    if not (c.diffaugment or c.ada or (c.flip and real)):
        return x
    keys = example_keys(key, x.shape[0], c.axis_name)
    if c.flip and real:
        x = flip_batch(jax.vmap(lambda k: named_key(k, "flip"))(keys), x)
    if c.ada:
        x = ada_batch(jax.vmap(lambda k: named_key(k, "ada"))(keys), x, p)
    return augment_batch(keys, x, c.diffaugment) if c.diffaugment else x


def d_view(c: GANStepConfig, d_params: PyTree, d_stats: PyTree, x: Array, y: Array | None,
           key: Array, real: bool, p: Array) -> tuple[Array, PyTree]:
    """D's logits on the augmented `x` (and the updated BatchNorm statistics)."""
    return apply_train(c.discriminator, d_params, d_stats, augment(c, x, key, real, p), y)


def logits_and_penalty(c: GANStepConfig, d_params: PyTree, d_stats: PyTree, x: Array,
                       y: Array | None, key: Array, real: bool, p: Array, with_penalty: bool
                       ) -> tuple[Array, Array, PyTree]:
    """(logits, E||grad_x D(aug(x))||^2 or 0, statistics)."""
    def fn(inp):
        return d_view(c, d_params, d_stats, inp, y, key, real, p)
    if not with_penalty:
        logits, stats = fn(x)
        return logits, jnp.float32(0.0), stats
    logits, sq, stats = losses.squared_input_gradient(fn, x, has_aux=True)
    return logits, jnp.mean(sq), stats


def d_loss_terms(c: GANStepConfig, d_params: PyTree, d_stats: PyTree, real: Array,
                 real_y: Array | None, fake: Array, fake_y: Array | None, key: Array, p: Array,
                 with_penalty: bool) -> tuple[Array, dict[str, Any]]:
    """D's loss = adversarial + lazy-weighted gamma / 2 * (R1, R2), and its parts."""
    real_logits, r1, stats = logits_and_penalty(
        c, d_params, d_stats, real, real_y, named_key(key, "augment_real"), True, p,
        with_penalty and c.r1_gamma > 0)
    fake_logits, r2, stats = logits_and_penalty(
        c, d_params, stats, fake, fake_y, named_key(key, "augment_fake"), False, p,
        with_penalty and c.r2_gamma > 0)
    adversarial = c.objective.d_loss(real_logits, fake_logits)
    weight = 0.5 * c.penalty_every
    loss = adversarial + weight * (c.r1_gamma * r1 + c.r2_gamma * r2)
    return loss, {"stats": stats, "real_logits": real_logits, "fake_logits": fake_logits,
                  "r1": r1, "r2": r2, "adversarial": adversarial}


def d_update(c: GANStepConfig, d_params: PyTree, d_stats: PyTree, d_opt: PyTree, real: Array,
             real_y: Array | None, fake: Array, fake_y: Array | None, key: Array, p: Array,
             penalty_due: Array) -> tuple[PyTree, PyTree, PyTree, Metrics, tuple[Array, Array]]:
    """One discriminator step: (params, statistics, optimizer state, metrics, D's logits on
    the real and the fake batch)."""
    def loss_with(with_penalty):
        return lambda q: d_loss_terms(c, q, d_stats, real, real_y, fake, fake_y, key, p,
                                      with_penalty)

    if c.penalised and c.penalty_every > 1:
        def loss_fn(q):
            return lax.cond(penalty_due, loss_with(True), loss_with(False), q)
    else:
        loss_fn = loss_with(c.penalised)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    grads = lax.pmean(grads, c.axis_name)
    updates, d_opt = c.d_tx.update(grads, d_opt, d_params)
    d_params = optax.apply_updates(d_params, updates)
    metrics = {
        "d_loss": loss,
        "d_real": jnp.mean(jax.nn.sigmoid(aux["real_logits"])),
        "d_fake": jnp.mean(jax.nn.sigmoid(aux["fake_logits"])),
        "d_grad_norm": optax.tree.norm(grads),
    }
    if c.r1_gamma > 0:
        metrics["r1"] = aux["r1"]
    if c.r2_gamma > 0:
        metrics["r2"] = aux["r2"]
    return d_params, aux["stats"], d_opt, metrics, (aux["real_logits"], aux["fake_logits"])


def g_forward(c: GANStepConfig, key: Array, g_params: PyTree, g_stats: PyTree, n: int,
              local_batch: int) -> tuple[Array, Callable, PyTree, Array | None]:
    """The n-th generator forward of an iteration, linearised: (fake, vjp, stats, labels)."""
    z = latent_noise(named_key(key, "latent", n), local_batch, c.latent_dim, c.axis_name)
    y = None
    if c.num_classes > 0:
        y = fake_labels(named_key(key, "fake_label", n), local_batch, c.num_classes,
                        c.axis_name)
    fake, g_vjp, stats = jax.vjp(lambda q: apply_train(c.generator, q, g_stats, z, y),
                                 g_params, has_aux=True)
    return fake, g_vjp, stats, y


def g_loss_terms(c: GANStepConfig, d_params: PyTree, d_stats: PyTree, fake: Array,
                 fake_y: Array | None, real: Array, real_y: Array | None, key: Array, p: Array
                 ) -> Array:
    """G's loss on the (augmented) fakes; a loss whose G term pairs them with D's logits
    (`g_uses_real`: the relativistic one) sees this iteration's last real batch, whose
    gradient does not reach G."""
    fake_logits, _ = d_view(c, d_params, d_stats, fake, fake_y, named_key(key, "augment_fake"),
                            False, p)  # G learns through the augmentation
    if not c.objective.g_uses_real:
        return c.objective.g_loss(None, fake_logits, c.g_loss)
    real_logits, _ = d_view(c, d_params, d_stats, real, real_y, named_key(key, "augment_real"),
                            True, p)
    return c.objective.g_loss(lax.stop_gradient(real_logits), fake_logits, c.g_loss)


def g_update(c: GANStepConfig, g_params: PyTree, g_opt: PyTree, g_vjp: Callable,
             d_params: PyTree, d_stats: PyTree, fake: Array, fake_y: Array | None, real: Array,
             real_y: Array | None, key: Array, p: Array
             ) -> tuple[PyTree, PyTree, Array, PyTree]:
    """One generator step through the linearised forward `g_vjp` of `fake`: (params,
    optimizer state, loss, gradients)."""
    loss, d_fake = jax.value_and_grad(
        lambda x: g_loss_terms(c, d_params, d_stats, x, fake_y, real, real_y, key, p))(fake)
    (g_grads,) = g_vjp(d_fake)
    g_grads = lax.pmean(g_grads, c.axis_name)
    updates, g_opt = c.g_tx.update(g_grads, g_opt, g_params)
    return optax.apply_updates(g_params, updates), g_opt, loss, g_grads


def next_ada_p(c: GANStepConfig, p: Array, logits: tuple[Array, Array]
               ) -> tuple[Array, Metrics]:
    """ADA's controller on the last D update's logits (global mean); for a loss whose logits
    have no fixed zero (`paired_ada`: the relativistic one) on the real-minus-fake pairs."""
    if c.ada != "adaptive":
        return p, {}
    real_logits, fake_logits = logits
    r_t = lax.pmean(overfitting_signal(
        real_logits, fake_logits if c.objective.paired_ada else None), c.axis_name)
    new_p = ada_adjust(p, r_t, target=c.ada_target, images=c.global_batch * c.d_steps,
                       kimg=c.ada_kimg, p_max=c.ada_p_max)
    return new_p, {"ada_rt": r_t}


def real_batches_and_labels(c: GANStepConfig, batch: Batch
                            ) -> tuple[Array, list[Array | None]]:
    """The d_steps real batches in [-1, 1] (from uint8 or floats) and their labels (None for
    an unconditional model), checked against what the step was built for."""
    real_batches = to_model_range(batch["image"])  # uint8 from the pipeline -> [-1, 1]
    if real_batches.ndim != 5 or real_batches.shape[0] != c.d_steps:
        raise ValueError(f"batch['image'] must be (d_steps={c.d_steps}, batch, H, W, C), "
                         f"got {real_batches.shape}")
    real_labels: list[Array | None] = [None] * c.d_steps
    if c.num_classes > 0:
        label_shape = batch["label"].shape if "label" in batch else None
        if label_shape != real_batches.shape[:2]:
            raise ValueError(f"a conditional GAN needs batch['label'] of shape (d_steps, "
                             f"batch) = {real_batches.shape[:2]}, got {label_shape}")
        real_labels = [batch["label"][i].astype(jnp.int32) for i in range(c.d_steps)]
    return real_batches, real_labels


def gan_step(c: GANStepConfig, state: GANState, batch: Batch) -> tuple[GANState, Metrics]:
    """One iteration on this device's slice: `batch["image"]` (d_steps, local_batch, H, W, C),
    one real batch per D update; with `num_classes > 0` `batch["label"]` (d_steps,
    local_batch). Metrics are averaged over the group, so every device returns the same
    numbers; an iteration with a NaN/Inf loss or gradient norm changes no weights
    (`guard_nonfinite`). The metrics `r1`/`r2` are 0 on iterations without them."""
    real_batches, real_labels = real_batches_and_labels(c, batch)
    local_batch = real_batches.shape[1]
    key = jax.random.fold_in(state.key, state.step)
    p = state.ada_p
    penalty_due = state.step % c.penalty_every == 0

    d_params, d_stats, d_opt = state.d_params, state.d_batch_stats, state.d_opt_state
    g_stats = state.g_batch_stats
    for i in range(c.d_steps):
        fake, g_vjp, g_stats_new, fake_y = g_forward(c, key, state.g_params, g_stats, i,
                                                     local_batch)
        d_params, d_stats, d_opt, d_metrics, d_logits = d_update(
            c, d_params, d_stats, d_opt, real_batches[i], real_labels[i], fake, fake_y,
            named_key(key, "d_update", i), p, penalty_due)
    # G's running statistics advance once per generator forward that a G update uses.
    g_params, g_opt = state.g_params, state.g_opt_state
    for j in range(c.g_steps):
        if j > 0:  # later G updates need a fresh forward through the updated generator
            fake, g_vjp, g_stats_new, fake_y = g_forward(c, key, g_params, g_stats,
                                                         c.d_steps + j, local_batch)
        g_params, g_opt, g_loss_value, g_grads = g_update(
            c, g_params, g_opt, g_vjp, d_params, d_stats, fake, fake_y, real_batches[-1],
            real_labels[-1], named_key(key, "g_update", j), p)
        g_stats = g_stats_new

    beta = ema_decay(state.step, c.global_batch, c.ema_halflife_kimg, c.ema_rampup)
    ema = jax.tree.map(lambda e, q: beta * e + (1.0 - beta) * q, state.ema_g_params, g_params)
    new_p, ada_metrics = next_ada_p(c, p, d_logits)
    updated = state.replace(
        g_params=g_params, d_params=d_params, g_batch_stats=g_stats, d_batch_stats=d_stats,
        g_opt_state=g_opt, d_opt_state=d_opt, ema_g_params=ema, ada_p=new_p)
    metrics = dict(d_metrics, g_loss=g_loss_value, g_grad_norm=optax.tree.norm(g_grads))
    # Losses and probabilities are local means; average them so metrics are global (and the
    # finiteness test below gives the same answer on every device).
    metrics = lax.pmean(metrics, c.axis_name)
    if c.ada:
        metrics = dict(metrics, ada_p=p, **ada_metrics)
    return guard_nonfinite(state, updated, metrics)


def make_gan_step(generator: nn.Module, discriminator: nn.Module,
                  g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                  **settings: Any) -> Callable[[GANState, Batch], tuple[GANState, Metrics]]:
    """`step(state, batch) -> (state, metrics)` for one device of the `axis_name` group:
    `gan_step` bound to a `GANStepConfig` of these modules, optimizers and `settings` (its
    fields: latent_dim, global_batch, gan_loss, ...)."""
    return functools.partial(gan_step, GANStepConfig(generator, discriminator, g_tx, d_tx,
                                                     **settings))
