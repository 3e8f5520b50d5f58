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

The pieces are named: `d_view` (augmentation, then D), `d_loss_terms` (the adversarial loss,
minimax or relativistic pairing, plus R1/R2), `d_update`, `g_loss_terms`, `g_update`, the EMA and
the ADA controller. Every random draw comes from `named_key(key, name, index)`, the iteration's
key folded with a fixed number per name, so adding a draw changes no other.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from genart_jax import losses
from genart_jax.augment import ada_adjust, ada_batch, augment_batch, overfitting_signal
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


def named_key(key: jax.Array, name: str, index: int = 0) -> jax.Array:
    """The key of draw `name` (its CRC-32) number `index` under `key`: draws keyed by what they
    are for, not by offsets that could collide."""
    return jax.random.fold_in(jax.random.fold_in(key, zlib.crc32(name.encode())), index)


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
                  g_loss: str = "non_saturating", gan_loss: str = "minimax",
                  r1_gamma: float = 0.0, r2_gamma: float = 0.0, penalty_every: int = 1,
                  d_steps: int = 1, g_steps: int = 1, ema_halflife_kimg: float = 10.0,
                  ema_rampup: float = 0.05, diffaugment: tuple[str, ...] = (),
                  flip: bool = False, ada: str = "", ada_target: float = 0.6,
                  ada_kimg: float = 500.0, ada_p_max: float = 0.8, axis_name: str = "data"
                  ) -> Callable[[GANState, Batch], tuple[GANState, Metrics]]:
    """Build `step(state, batch) -> (state, metrics)` for one device of the `axis_name` group.

    `batch["image"]` has shape (d_steps, local_batch, H, W, C): one real batch per D update;
    with `num_classes > 0` (conditional models) `batch["label"]` (d_steps, local_batch) holds
    their classes, and each generator forward draws uniform labels for its fakes (`fake_labels`),
    which the discriminator sees in both the D and the G update.
    Metrics are averaged over the group, so every device returns the same numbers. An
    iteration with a NaN/Inf loss or gradient norm changes no weights (`guard_nonfinite`).
    `diffaugment` (policy names) augments real and generated images before every D pass;
    `flip` flips real images at random; `ada` ("adaptive" or "fixed") applies
    `genart_jax.augment.ada_augment` with probability `state.ada_p`, which "adaptive" steers
    toward E[sign(D(real))] = `ada_target`.
    `gan_loss`: a name in `losses.GAN_LOSSES` ("minimax": D's cross-entropy and G's `g_loss`;
    "relativistic": the pairing loss; "hinge"). `r1_gamma`/`r2_gamma` add
    gamma / 2 * E||grad_x D||^2 on real / generated images
    (gradients of D through the augmentation, at the un-augmented image, as R3GAN's code),
    every `penalty_every` iterations weighted by `penalty_every` (lazy, as StyleGAN2); the
    metrics `r1`/`r2` are 0 on iterations without them.
    """
    if g_loss not in losses.GENERATOR_LOSSES:
        raise ValueError(f"unknown generator loss {g_loss!r}")
    objective = losses.gan_loss(gan_loss)
    if ada not in ("", "adaptive", "fixed"):
        raise ValueError(f"unknown ada mode {ada!r}; choose '', 'adaptive' or 'fixed'")
    penalised = r1_gamma > 0 or r2_gamma > 0

    def pmean(tree):
        return lax.pmean(tree, axis_name)

    def augment(x, key, real, p):
        """What D sees of `x`: flips (real), ADA's ops with probability p, DiffAugment."""
        if not (diffaugment or ada or (flip and real)):
            return x
        keys = example_keys(key, x.shape[0], axis_name)
        if flip and real:
            x = augment_batch(keys, x, (), with_flip=True)
        if ada:
            x = ada_batch(jax.vmap(lambda k: jax.random.fold_in(k, 7))(keys), x, p)
        return augment_batch(keys, x, diffaugment) if diffaugment else x

    def d_view(d_params, d_stats, x, y, key, real, p):
        """D's logits on the augmented `x` (and the updated BatchNorm statistics)."""
        return apply_train(discriminator, d_params, d_stats, augment(x, key, real, p), y)

    def logits_and_penalty(d_params, d_stats, x, y, key, real, p, with_penalty):
        """(logits, E||grad_x D(aug(x))||^2 or 0, statistics)."""
        def fn(inp):
            return d_view(d_params, d_stats, inp, y, key, real, p)
        if not with_penalty:
            logits, stats = fn(x)
            return logits, jnp.float32(0.0), stats
        logits, sq, stats = losses.squared_input_gradient(fn, x, has_aux=True)
        return logits, jnp.mean(sq), stats

    def d_loss_terms(d_params, d_stats, real, real_y, fake, fake_y, key, p, with_penalty):
        """D's loss = adversarial + lazy-weighted gamma / 2 * (R1, R2), and its parts."""
        real_logits, r1, stats = logits_and_penalty(
            d_params, d_stats, real, real_y, named_key(key, "augment_real"), True, p,
            with_penalty and r1_gamma > 0)
        fake_logits, r2, stats = logits_and_penalty(
            d_params, stats, fake, fake_y, named_key(key, "augment_fake"), False, p,
            with_penalty and r2_gamma > 0)
        adversarial = objective.d_loss(real_logits, fake_logits)
        weight = 0.5 * penalty_every
        loss = adversarial + weight * (r1_gamma * r1 + r2_gamma * r2)
        return loss, {"stats": stats, "real_logits": real_logits, "fake_logits": fake_logits,
                      "r1": r1, "r2": r2, "adversarial": adversarial}

    def d_update(d_params, d_stats, d_opt, real, real_y, fake, fake_y, key, p, penalty_due):
        """One discriminator step: (params, statistics, optimizer state, metrics, real logits)."""
        def loss_with(with_penalty):
            return lambda q: d_loss_terms(q, d_stats, real, real_y, fake, fake_y, key, p,
                                          with_penalty)

        grad_fn = jax.value_and_grad
        if penalised and penalty_every > 1:
            def loss_fn(q):
                return lax.cond(penalty_due, loss_with(True), loss_with(False), q)
        else:
            loss_fn = loss_with(penalised)
        (loss, aux), grads = grad_fn(loss_fn, has_aux=True)(d_params)
        grads = pmean(grads)
        updates, d_opt = d_tx.update(grads, d_opt, d_params)
        d_params = optax.apply_updates(d_params, updates)
        metrics = {
            "d_loss": loss,
            "d_real": jnp.mean(jax.nn.sigmoid(aux["real_logits"])),
            "d_fake": jnp.mean(jax.nn.sigmoid(aux["fake_logits"])),
            "d_grad_norm": optax.tree.norm(grads),
        }
        if r1_gamma > 0:
            metrics["r1"] = aux["r1"]
        if r2_gamma > 0:
            metrics["r2"] = aux["r2"]
        return d_params, aux["stats"], d_opt, metrics, (aux["real_logits"], aux["fake_logits"])

    def g_loss_terms(d_params, d_stats, fake, fake_y, real, real_y, key, p):
        """G's loss on the (augmented) fakes; a loss whose G term pairs them with D's logits
        (`g_uses_real`: the relativistic one) sees this iteration's last real batch, whose
        gradient does not reach G."""
        fake_logits, _ = d_view(d_params, d_stats, fake, fake_y, named_key(key, "augment_fake"),
                                False, p)  # G learns through the augmentation
        if not objective.g_uses_real:
            return objective.g_loss(None, fake_logits, g_loss)
        real_logits, _ = d_view(d_params, d_stats, real, real_y, named_key(key, "augment_real"),
                                True, p)
        return objective.g_loss(lax.stop_gradient(real_logits), fake_logits, g_loss)

    def g_update(g_params, g_opt, g_vjp, d_params, d_stats, fake, fake_y, real, real_y, key, p):
        """One generator step through the linearised forward `g_vjp` of `fake`."""
        loss, d_fake = jax.value_and_grad(
            lambda x: g_loss_terms(d_params, d_stats, x, fake_y, real, real_y, key, p))(fake)
        (g_grads,) = g_vjp(d_fake)
        g_grads = pmean(g_grads)
        updates, g_opt = g_tx.update(g_grads, g_opt, g_params)
        return optax.apply_updates(g_params, updates), g_opt, loss, g_grads

    def next_ada_p(p, logits):
        """ADA's controller on the last D update's logits (global mean); for the relativistic
        loss on the real-minus-fake pairs, as its logits have no fixed zero."""
        if ada != "adaptive":
            return p, {}
        real_logits, fake_logits = logits
        r_t = pmean(overfitting_signal(
            real_logits, fake_logits if objective.paired_ada else None))
        new_p = ada_adjust(p, r_t, target=ada_target, images=global_batch * d_steps,
                           kimg=ada_kimg, p_max=ada_p_max)
        return new_p, {"ada_rt": r_t}

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
        p = state.ada_p
        penalty_due = state.step % penalty_every == 0

        def g_forward(g_params, g_stats, n):
            """The n-th generator forward of this step, linearised: (fake, vjp, stats, labels)."""
            z = latent_noise(named_key(key, "latent", n), local_batch, latent_dim, axis_name)
            y = None
            if num_classes > 0:
                y = fake_labels(named_key(key, "fake_label", n), local_batch, num_classes,
                                axis_name)
            fake, g_vjp, stats = jax.vjp(lambda q: apply_train(generator, q, g_stats, z, y),
                                         g_params, has_aux=True)
            return fake, g_vjp, stats, y

        d_params, d_stats, d_opt = state.d_params, state.d_batch_stats, state.d_opt_state
        g_stats = state.g_batch_stats
        for i in range(d_steps):
            fake, g_vjp, g_stats_new, fake_y = g_forward(state.g_params, g_stats, i)
            d_params, d_stats, d_opt, d_metrics, d_logits = d_update(
                d_params, d_stats, d_opt, real_batches[i], real_labels[i], fake, fake_y,
                named_key(key, "d_update", i), p, penalty_due)
        # G's running statistics advance once per generator forward that a G update uses.
        g_params, g_opt = state.g_params, state.g_opt_state
        for j in range(g_steps):
            if j > 0:  # later G updates need a fresh forward through the updated generator
                fake, g_vjp, g_stats_new, fake_y = g_forward(g_params, g_stats, d_steps + j)
            g_params, g_opt, g_loss_value, g_grads = g_update(
                g_params, g_opt, g_vjp, d_params, d_stats, fake, fake_y, real_batches[-1],
                real_labels[-1], named_key(key, "g_update", j), p)
            g_stats = g_stats_new

        beta = ema_decay(state.step, global_batch, ema_halflife_kimg, ema_rampup)
        ema = jax.tree.map(lambda e, q: beta * e + (1.0 - beta) * q, state.ema_g_params,
                           g_params)
        new_p, ada_metrics = next_ada_p(p, d_logits)
        updated = state.replace(
            g_params=g_params, d_params=d_params, g_batch_stats=g_stats, d_batch_stats=d_stats,
            g_opt_state=g_opt, d_opt_state=d_opt, ema_g_params=ema, ada_p=new_p)
        metrics = dict(d_metrics, g_loss=g_loss_value, g_grad_norm=optax.tree.norm(g_grads))
        # Losses and probabilities are local means; average them so metrics are global (and
        # the finiteness test below gives the same answer on every device).
        metrics = pmean(metrics)
        if ada:
            metrics = dict(metrics, ada_p=p, **ada_metrics)
        return guard_nonfinite(state, updated, metrics)

    return step
