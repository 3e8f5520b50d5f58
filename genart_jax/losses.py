"""GAN objectives (Goodfellow et al. 2014; the relativistic pairing loss and the R1/R2 gradient
penalties of R3GAN; the hinge loss of SNGAN and BigGAN), from discriminator logits, numerically
stable, and the ELBO's pieces.

Each adversarial objective is registered once, by name, in `GAN_LOSSES` (`register_gan_loss`):
its D and G terms and what its logits mean. `train.gan_loss` is validated against that registry
and the GAN step looks its terms up there, so a new loss is its two functions, one
`register_gan_loss(...)` call below and a test.

With D(x) = sigmoid(l(x)):  log D = log_sigmoid(l) and log(1 - D) = log_sigmoid(-l), which stay
finite for any logit. Every function reduces with an explicit mean over the batch axis and
returns a float32 scalar.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

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


def _paired(real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    real = _logits(real_logits, "real_logits")
    fake = _logits(fake_logits, "fake_logits")
    if real.shape != fake.shape:
        raise ValueError(f"a relativistic pairing loss needs as many real as fake logits, got "
                         f"{real.shape} and {fake.shape}")
    return real, fake


def relativistic_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The discriminator's relativistic pairing loss (Jolicoeur-Martineau 2019; R3GAN eq. 2):
    E[softplus(-(D(x_i) - D(G(z_i))))], example i's real paired with fake i."""
    real, fake = _paired(real_logits, fake_logits)
    return jnp.mean(jax.nn.softplus(fake - real))


def relativistic_g_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The generator's side of the pairing loss: E[softplus(-(D(G(z_i)) - D(x_i)))]."""
    real, fake = _paired(real_logits, fake_logits)
    return jnp.mean(jax.nn.softplus(real - fake))


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The discriminator's hinge loss (Lim & Ye 2017; SNGAN, Miyato et al. 2018, eq. 16; BigGAN):
    E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    real = _logits(real_logits, "real_logits")
    fake = _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
    """The generator's side of the hinge loss: -E[D(G(z))]."""
    return -jnp.mean(_logits(fake_logits, "fake_logits"))


@dataclasses.dataclass(frozen=True)
class GANLoss:
    """One adversarial objective on D's logits.

    `d_loss(real_logits, fake_logits)`; `g_loss(real_logits, fake_logits, g_kind)`, where
    `real_logits` is None unless `g_uses_real` (then D's logits on this iteration's real batch,
    their gradient stopped by the caller) and `g_kind` is `train.g_loss`. `paired_ada`: ADA's
    overfitting signal is taken on real-minus-fake pairs, for logits without a fixed zero.
    `logits`: what D's logits mean, for the docs and the metrics' reader."""
    name: str
    d_loss: Callable[[jax.Array, jax.Array], jax.Array]
    g_loss: Callable[[jax.Array | None, jax.Array, str], jax.Array]
    g_uses_real: bool = False
    paired_ada: bool = False
    logits: str = ""


GAN_LOSSES: dict[str, GANLoss] = {}


def register_gan_loss(loss: GANLoss) -> GANLoss:
    """Add an objective to `GAN_LOSSES` under its name (once)."""
    if loss.name in GAN_LOSSES:
        raise ValueError(f"GAN loss {loss.name!r} is registered already")
    GAN_LOSSES[loss.name] = loss
    return loss


def gan_loss(name: str) -> GANLoss:
    """The registered objective `name`, or a ValueError listing the registered ones."""
    if name not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}; choose one of {tuple(GAN_LOSSES)}")
    return GAN_LOSSES[name]


register_gan_loss(GANLoss(
    "minimax", d_loss=discriminator_loss,
    g_loss=lambda real_logits, fake_logits, kind: generator_loss(fake_logits, kind),
    logits="log-odds that the image is real: d_real and d_fake are mean sigmoids, 0.5 at "
           "equilibrium"))
register_gan_loss(GANLoss(
    "relativistic", d_loss=relativistic_d_loss,
    g_loss=lambda real_logits, fake_logits, kind: relativistic_g_loss(real_logits, fake_logits),
    g_uses_real=True, paired_ada=True,
    logits="only differences real - fake carry meaning (no fixed zero): read d_real - d_fake"))
register_gan_loss(GANLoss(
    "hinge", d_loss=hinge_d_loss,
    g_loss=lambda real_logits, fake_logits, kind: hinge_g_loss(fake_logits),
    logits="margins: D wants real >= 1 and fake <= -1; sigmoid(logit) > 0.5 still means 'real'"))


def squared_input_gradient(logits_fn: Callable, x: jax.Array, has_aux: bool = False
                           ) -> tuple[Any, ...]:
    """(logits, ||d sum(logits) / d x_i||^2 per example[, aux]) for a batch `x`: one forward and
    one backward of `logits_fn` (with examples independent, as in D without BatchNorm, that is
    each example's own input gradient). Differentiable again, so a loss can hold R1/R2
    (Mescheder et al. 2018). `has_aux`: `logits_fn` returns (logits, aux)."""
    out = jax.vjp(logits_fn, x, has_aux=has_aux)
    logits, vjp = out[0], out[1]
    (grad,) = vjp(jnp.ones_like(logits))
    grad = _at_least_f32(grad)  # bfloat16 -> float32; float64 (tests) stays
    sq = jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=-1)
    return (logits, sq, out[2]) if has_aux else (logits, sq)


def zero_centered_penalty(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array
                          ) -> jax.Array:
    """R1 (x real) or R2 (x generated): E_x[||grad_x D(x)||^2], the batch mean; the loss adds
    gamma / 2 times it."""
    return jnp.mean(squared_input_gradient(logits_fn, x)[1])


# ---------------------------------------------------------------------------------------------
# The ELBO (Kingma & Welling 2014) and the importance-weighted bound (Burda et al. 2016).
#
# Everything below returns per-example values (sums over the event dimensions, no batch
# reduction) in nats, so callers choose the reduction and report it explicitly.

LOG_2PI = math.log(2.0 * math.pi)


def _at_least_f32(x: jax.Array) -> jax.Array:
    """bfloat16/float16 model outputs -> float32; float32 and float64 stay as they are."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _sum_event(x: jax.Array) -> jax.Array:
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mu + sigma * eps with eps ~ N(0, I) and sigma = exp(logvar / 2)."""
    eps = jax.random.normal(key, mu.shape, jnp.float32)
    return mu + jnp.exp(0.5 * logvar) * eps


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, closed form:
    0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)."""
    return 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def gaussian_log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis; mu and logvar broadcast to
    z's shape (e.g. K samples (K, N, D) of a posterior (N, D))."""
    mu, logvar = jnp.broadcast_to(mu, z.shape), jnp.broadcast_to(logvar, z.shape)
    return -0.5 * jnp.sum(LOG_2PI + logvar + (z - mu) ** 2 * jnp.exp(-logvar), axis=-1)


def standard_normal_log_density(z: jax.Array) -> jax.Array:
    return -0.5 * jnp.sum(LOG_2PI + z**2, axis=-1)


def bernoulli_log_likelihood(x01: jax.Array, logits: jax.Array) -> jax.Array:
    """log p(x | z) for x in {0, 1} (or [0, 1] probabilities, where it is the negative binary
    cross-entropy, not a normalised density) under Bernoulli(sigmoid(logits))."""
    logits = _at_least_f32(logits)
    return _sum_event(x01 * jax.nn.log_sigmoid(logits) + (1 - x01) * jax.nn.log_sigmoid(-logits))


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """Continuous Gaussian density log N(x; mean, exp(log_scale)^2) per pixel, summed.
    `log_scale` broadcasts (a scalar for fixed variance, an image for learned per-pixel)."""
    mean = _at_least_f32(mean)
    log_scale = jnp.broadcast_to(log_scale, mean.shape)
    return _sum_event(-0.5 * LOG_2PI - log_scale - 0.5 * ((x - mean) * jnp.exp(-log_scale)) ** 2)


def discretized_gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                        bins: int = 256) -> jax.Array:
    """Discretised Gaussian: the probability mass of x's bin among `bins` equal bins over
    [-1, 1] (8-bit data: bin width 2/255), the edge bins extended to +-infinity; summed log
    probabilities, a proper likelihood of the quantised data."""
    mean = _at_least_f32(mean)
    log_scale = jnp.broadcast_to(log_scale, mean.shape)
    half = 1.0 / (bins - 1)
    inv = jnp.exp(-log_scale)
    upper = jax.scipy.stats.norm.cdf((x + half - mean) * inv)
    lower = jax.scipy.stats.norm.cdf((x - half - mean) * inv)
    upper = jnp.where(x > 1 - half, 1.0, upper)
    lower = jnp.where(x < -1 + half, 0.0, lower)
    # log(upper - lower), safe where the mass is tiny: fall back to the density times the width.
    mass = upper - lower
    log_density = (-0.5 * LOG_2PI - log_scale - 0.5 * ((x - mean) * inv) ** 2 + jnp.log(2 * half))
    return _sum_event(jnp.where(mass > 1e-12, jnp.log(jnp.maximum(mass, 1e-12)), log_density))


def negative_elbo(log_px_z: jax.Array, kl: jax.Array, beta: float | jax.Array = 1.0
                  ) -> jax.Array:
    """-ELBO(x) = -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z)) per example (beta = 1: the
    bound itself; beta != 1: the beta-VAE objective)."""
    return -log_px_z + beta * kl


def iwae_bound(log_px_z: jax.Array, log_pz: jax.Array, log_qz_x: jax.Array) -> jax.Array:
    """log (1/K) sum_k p(x, z_k) / q(z_k | x) per example, from (K, batch) arrays; a lower
    bound on log p(x) that tightens as K grows (K = 1 is the ELBO)."""
    log_w = log_px_z + log_pz - log_qz_x
    return jax.scipy.special.logsumexp(log_w, axis=0) - jnp.log(log_w.shape[0])


def bits_per_dim(nats: jax.Array, num_dims: int) -> jax.Array:
    """Nats per example -> bits per dimension."""
    return nats / (num_dims * jnp.log(2.0))


def kl_warmup(step: jax.Array, warmup_steps: int) -> jax.Array:
    """KL weight ramping linearly from 0 to 1 over `warmup_steps` (1 when 0)."""
    if warmup_steps <= 0:
        return jnp.float32(1.0)
    return jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def likelihood_mean_image(kind: str, out: jax.Array) -> jax.Array:
    """A VAE decoder's output -> its mean image in [-1, 1]: the Bernoulli mean (from logits)
    rescaled, or the Gaussian mean clipped."""
    if kind == "bernoulli":
        return 2.0 * jax.nn.sigmoid(out) - 1.0
    return jnp.clip(out, -1.0, 1.0)
