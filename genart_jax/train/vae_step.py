"""The per-device VAE train step (same design as the GAN step: local gradients averaged with
`lax.pmean` over the data axis, per-example randomness keyed by global example index) and the
per-example ELBO terms it shares with evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from genart_jax import losses
from genart_jax.data.convert import to_model_range
from genart_jax.train.state import VAEState
from genart_jax.train.step_common import example_keys, guard_nonfinite

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Likelihood:
    """p(x | z) per pixel: Bernoulli on (x + 1) / 2 (optionally binarised by sampling), or
    Gaussian with a fixed or learned per-pixel scale, discretised to 8-bit bins or continuous."""

    kind: str = "bernoulli"
    binarize: bool = True
    learned_scale: bool = True
    fixed_scale: float = 0.1
    discretized: bool = True

    @classmethod
    def from_config(cls, vae_cfg) -> Likelihood:
        return cls(kind=vae_cfg.likelihood, binarize=vae_cfg.binarize,
                   learned_scale=vae_cfg.scale == "learned", fixed_scale=vae_cfg.fixed_scale,
                   discretized=vae_cfg.discretized)

    def target(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """The variable whose likelihood is modelled, from one image x in [-1, 1]."""
        if self.kind == "bernoulli":
            p = (x + 1.0) / 2.0
            return jax.random.bernoulli(key, p).astype(jnp.float32) if self.binarize else p
        return x

    def log_prob(self, target: jax.Array, out: jax.Array, log_scale: jax.Array | None
                 ) -> jax.Array:
        if self.kind == "bernoulli":
            return losses.bernoulli_log_likelihood(target, out)
        ls = log_scale if self.learned_scale else jnp.log(jnp.float32(self.fixed_scale))
        if self.discretized:
            return losses.discretized_gaussian_log_likelihood(target, out, ls)
        return losses.gaussian_log_likelihood(target, out, ls)

    def mean_image(self, out: jax.Array) -> jax.Array:
        """Decoder output -> the mean image in [-1, 1], for display."""
        return losses.likelihood_mean_image(self.kind, out)


def _labels(model: nn.Module, y: jax.Array | None) -> jax.Array | None:
    return y if model.num_classes else None


def elbo_terms(model: nn.Module, lik: Likelihood, params: PyTree, x: jax.Array,
               y: jax.Array | None, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log p(x|z) with z ~ q(z|x) once, closed-form KL) per example; `keys` one per example."""
    y = _labels(model, y)
    mu, logvar = model.apply({"params": params}, x, y, method=model.encode)
    eps_keys, bin_keys = jnp.split(jax.vmap(lambda k: jax.random.split(k, 2))(keys), 2, axis=1)
    z = jax.vmap(losses.reparameterize)(eps_keys[:, 0], mu, logvar)
    out = model.apply({"params": params}, z, y, method=model.decode)
    target = jax.vmap(lik.target)(x, bin_keys[:, 0])
    log_scale = params.get("log_scale")
    return lik.log_prob(target, out, log_scale), losses.gaussian_kl(mu, logvar)


def make_vae_step(model: nn.Module, tx: optax.GradientTransformation, lik: Likelihood, *,
                  beta: float = 1.0, kl_warmup_steps: int = 0, axis_name: str = "data"
                  ) -> Callable[[VAEState, dict], tuple[VAEState, dict]]:
    """`step(state, batch) -> (state, metrics)` for one device; batch["image"] is
    (1, local_batch, H, W, C). The loss is the mean negative ELBO with KL weight
    beta * warm-up; metrics report the plain negative ELBO (beta = 1) in nats per image and
    bits per dimension."""

    def step(state: VAEState, batch: dict) -> tuple[VAEState, dict]:
        x, y = to_model_range(batch["image"][0]), batch["label"][0]  # uint8 -> [-1, 1]
        num_dims = x[0].size
        keys = example_keys(jax.random.fold_in(state.key, state.step), x.shape[0], axis_name)
        weight = beta * losses.kl_warmup(state.step, kl_warmup_steps)

        def loss_fn(params):
            log_px_z, kl = elbo_terms(model, lik, params, x, y, keys)
            return jnp.mean(losses.negative_elbo(log_px_z, kl, weight)), (log_px_z, kl)

        (loss, (log_px_z, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = lax.pmean(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updated = state.replace(params=optax.apply_updates(state.params, updates),
                                opt_state=opt_state)
        neg_elbo = jnp.mean(losses.negative_elbo(log_px_z, kl))
        metrics = lax.pmean({"loss": loss, "neg_elbo": neg_elbo, "recon_nll": -jnp.mean(log_px_z),
                             "kl": jnp.mean(kl), "kl_weight": weight}, axis_name)
        metrics["bits_per_dim"] = losses.bits_per_dim(metrics["neg_elbo"], num_dims)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return guard_nonfinite(state, updated, metrics)

    return step
