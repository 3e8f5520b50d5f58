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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from genart_jax import losses
from genart_jax.augment import augment_batch
from genart_jax.data.convert import to_model_range
from genart_jax.train.state import GANState

PyTree = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
State = Any  # a state dataclass with step, nonfinite_count and first_nonfinite_step


def apply_train(model: nn.Module, params: PyTree, batch_stats: PyTree, x: jax.Array,
                labels: jax.Array | None = None) -> tuple[jax.Array, PyTree]:
    """Apply in training mode (with class labels for a conditional model); returns (output,
    updated batch statistics) ({} without BN)."""
    if not batch_stats:
        return model.apply({"params": params}, x, labels, train=True), batch_stats
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, labels,
                               train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]


def example_keys(key: jax.Array, local_batch: int, axis_name: str) -> jax.Array:
    """One key per example of this device, `fold_in(key, global example index)`: random draws
    that do not depend on how the global batch is split over devices."""
    start = lax.axis_index(axis_name) * local_batch
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(local_batch))


def latent_noise(key: jax.Array, local_batch: int, latent_dim: int, axis_name: str) -> jax.Array:
    """Standard normal latents for this device's examples, keyed by global example index."""
    keys = example_keys(key, local_batch, axis_name)
    return jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys)


def fake_labels(key: jax.Array, local_batch: int, num_classes: int, axis_name: str
                ) -> jax.Array:
    """Uniform class labels (int32) for this device's generated examples, keyed by global
    example index like `latent_noise`."""
    keys = example_keys(key, local_batch, axis_name)
    return jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes, jnp.int32))(keys)


def ema_decay(step: jax.Array, batch_size: int, halflife_kimg: float, rampup: float) -> jax.Array:
    """Per-step EMA weight for a half-life in images, shortened early on by a ramp-up
    (StyleGAN2-ADA: half-life <= rampup * images seen)."""
    seen = (step + 1).astype(jnp.float32) * batch_size
    half = jnp.float32(halflife_kimg * 1000.0)
    if rampup > 0:
        half = jnp.minimum(half, seen * rampup)
    return jnp.where(half > 0, 0.5 ** (batch_size / jnp.maximum(half, 1e-8)), 0.0)


def guard_nonfinite(old: State, new: State, metrics: Metrics) -> tuple[State, Metrics]:
    """Keep `new` if every metric is finite, else drop the update (keep `old`'s weights and
    optimizer states) and count it. The step counter always advances."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    step = old.step + 1
    count = old.nonfinite_count + jnp.where(finite, 0, 1).astype(jnp.int32)
    first = jnp.where((old.first_nonfinite_step == 0) & ~finite, step,
                      old.first_nonfinite_step).astype(jnp.int32)
    state = kept.replace(step=step, nonfinite_count=count, first_nonfinite_step=first)
    return state, dict(metrics, nonfinite_count=count.astype(jnp.float32))


def make_gan_step(generator: nn.Module, discriminator: nn.Module,
                  g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation, *,
                  latent_dim: int, global_batch: int, num_classes: int = 0,
                  g_loss: str = "non_saturating",
                  d_steps: int = 1, g_steps: int = 1, ema_halflife_kimg: float = 10.0,
                  ema_rampup: float = 0.05, diffaugment: tuple[str, ...] = (),
                  flip: bool = False, axis_name: str = "data"
                  ) -> Callable[[GANState, Batch], tuple[GANState, Metrics]]:
    """Build `step(state, batch) -> (state, metrics)` for one device of the `axis_name` group.

    `batch["image"]` has shape (d_steps, local_batch, H, W, C): one real batch per D update;
    with `num_classes > 0` (conditional models) `batch["label"]` (d_steps, local_batch) holds
    their classes, and each generator forward draws uniform labels for its fakes (`fake_labels`),
    which the discriminator sees in both the D and the G update.
    Metrics are averaged over the group, so every device returns the same numbers. An
    iteration with a NaN/Inf loss or gradient norm changes no weights (`guard_nonfinite`).
    `diffaugment` (policy names) augments real and generated images before every D pass;
    `flip` flips real images at random.
    """

    def d_input(x, key, real):
        if not (diffaugment or (flip and real)):
            return x
        keys = example_keys(key, x.shape[0], axis_name)
        return augment_batch(keys, x, diffaugment, with_flip=flip and real)
    if g_loss not in losses.GENERATOR_LOSSES:
        raise ValueError(f"unknown generator loss {g_loss!r}")

    def pmean(tree):
        return lax.pmean(tree, axis_name)

    def d_update(d_params, d_stats, d_opt, real, real_y, fake, fake_y, key):
        real = d_input(real, jax.random.fold_in(key, 0), True)
        fake = d_input(fake, jax.random.fold_in(key, 1), False)

        def loss_fn(p):
            real_logits, stats = apply_train(discriminator, p, d_stats, real, real_y)
            fake_logits, stats = apply_train(discriminator, p, stats, fake, fake_y)
            loss = losses.discriminator_loss(real_logits, fake_logits)
            return loss, (stats, real_logits, fake_logits)

        (loss, (stats, real_logits, fake_logits)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(d_params)
        grads = pmean(grads)
        updates, d_opt = d_tx.update(grads, d_opt, d_params)
        d_params = optax.apply_updates(d_params, updates)
        metrics = {
            "d_loss": loss,
            "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
            "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
            "d_grad_norm": optax.tree.norm(grads),
        }
        return d_params, stats, d_opt, metrics

    def step(state: GANState, batch: Batch) -> tuple[GANState, Metrics]:
        real_batches = to_model_range(batch["image"])  # uint8 from the pipeline -> [-1, 1]
        if real_batches.ndim != 5 or real_batches.shape[0] != d_steps:
            raise ValueError(f"batch['image'] must be (d_steps={d_steps}, batch, H, W, C), "
                             f"got {real_batches.shape}")
        local_batch = real_batches.shape[1]
        real_labels = [None] * d_steps
        if num_classes > 0:
            label_shape = batch["label"].shape if "label" in batch else None
            if label_shape != real_batches.shape[:2]:
                raise ValueError(f"a conditional GAN needs batch['label'] of shape (d_steps, "
                                 f"batch) = {real_batches.shape[:2]}, got {label_shape}")
            real_labels = [batch["label"][i].astype(jnp.int32) for i in range(d_steps)]
        key = jax.random.fold_in(state.key, state.step)

        def g_forward(g_params, g_stats, n):
            """The n-th generator forward of this step, linearised: (fake, vjp, stats, labels)."""
            z = latent_noise(jax.random.fold_in(key, n), local_batch, latent_dim, axis_name)
            y = None
            if num_classes > 0:
                y = fake_labels(jax.random.fold_in(key, 3000 + n), local_batch, num_classes,
                                axis_name)
            fake, g_vjp, stats = jax.vjp(lambda p: apply_train(generator, p, g_stats, z, y),
                                         g_params, has_aux=True)
            return fake, g_vjp, stats, y

        d_params, d_stats, d_opt = state.d_params, state.d_batch_stats, state.d_opt_state
        g_stats = state.g_batch_stats
        for i in range(d_steps):
            fake, g_vjp, g_stats_new, fake_y = g_forward(state.g_params, g_stats, i)
            d_params, d_stats, d_opt, d_metrics = d_update(
                d_params, d_stats, d_opt, real_batches[i], real_labels[i], fake, fake_y,
                jax.random.fold_in(key, 1000 + i))
        # G's running statistics advance once per generator forward that a G update uses.
        g_params, g_opt = state.g_params, state.g_opt_state
        for j in range(g_steps):
            if j > 0:  # later G updates need a fresh forward through the updated generator
                fake, g_vjp, g_stats_new, fake_y = g_forward(g_params, g_stats, d_steps + j)

            aug_key = jax.random.fold_in(key, 2000 + j)

            def loss_of_fake(x, aug_key=aug_key, fake_y=fake_y):
                x = d_input(x, aug_key, False)  # G learns through the augmentation
                logits, _ = apply_train(discriminator, d_params, d_stats, x, fake_y)
                return losses.generator_loss(logits, g_loss)

            g_loss_value, d_fake = jax.value_and_grad(loss_of_fake)(fake)
            (g_grads,) = g_vjp(d_fake)
            g_grads = pmean(g_grads)
            updates, g_opt = g_tx.update(g_grads, g_opt, g_params)
            g_params = optax.apply_updates(g_params, updates)
            g_stats = g_stats_new

        beta = ema_decay(state.step, global_batch, ema_halflife_kimg, ema_rampup)
        ema = jax.tree.map(lambda e, p: beta * e + (1.0 - beta) * p, state.ema_g_params,
                           g_params)
        updated = state.replace(
            g_params=g_params, d_params=d_params, g_batch_stats=g_stats, d_batch_stats=d_stats,
            g_opt_state=g_opt, d_opt_state=d_opt, ema_g_params=ema)
        metrics = dict(d_metrics, g_loss=g_loss_value, g_grad_norm=optax.tree.norm(g_grads))
        # Losses and probabilities are local means; average them so metrics are global (and
        # the finiteness test below gives the same answer on every device).
        metrics = pmean(metrics)
        return guard_nonfinite(state, updated, metrics)

    return step
