"""GAN objectives (Goodfellow et al. 2014), from discriminator logits, numerically stable.

With D(x) = sigmoid(l(x)):  log D = log_sigmoid(l) and log(1 - D) = log_sigmoid(-l), which stay
finite for any logit. Every function reduces with an explicit mean over the batch axis and
returns a float32 scalar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GENERATOR_LOSSES = ("non_saturating", "saturating")


def _logits(x: jax.Array, name: str) -> jax.Array:
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D batch of logits, got shape {x.shape}")
    return x.astype(jnp.float32)


def minimax_value(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))], estimated on the two batches."""
    real = _logits(real_logits, "real_logits")
    fake = _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.log_sigmoid(real)) + jnp.mean(jax.nn.log_sigmoid(-fake))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """D maximises V, so it minimises -V = -E[log D(x)] - E[log(1 - D(G(z)))]."""
    return -minimax_value(real_logits, fake_logits)


def generator_loss(fake_logits: jax.Array, kind: str = "non_saturating") -> jax.Array:
    """The generator's loss on D's logits for generated images.

    "saturating": min E[log(1 - D(G(z)))], the minimax objective itself, whose gradient vanishes
    when D confidently rejects the fakes. "non_saturating" (default): min -E[log D(G(z))], same
    fixed point, strong gradients early in training.
    """
    fake = _logits(fake_logits, "fake_logits")
    if kind == "non_saturating":
        return -jnp.mean(jax.nn.log_sigmoid(fake))
    if kind == "saturating":
        return jnp.mean(jax.nn.log_sigmoid(-fake))
    raise ValueError(f"unknown generator loss {kind!r}; choose one of {GENERATOR_LOSSES}")
