"""The discretised mixture of logistics (DMoL): a per-pixel likelihood of 8-bit images
(Salimans, Karpathy, Chen, Kingma, "PixelCNN++", ICLR 2017, section 2.1-2.2; the output
distribution of VDVAE, Child 2021, and NVAE). Pure functions, no model inside.

Each pixel has `M` mixture components shared by its `C` channels. Component m gives channel c a
logistic with mean mu_{c,m} + sum_{j<c} a_{c,j,m} x_j (the channel-wise linear dependence: the
mean of green moves with the pixel's red value, blue with red and green) and scale
exp(s_{c,m}), discretised to the 2^bits bins of the data: value k is the bin centre
x = 2k / (2^bits - 1) - 1 in [-1, 1], its bin [x - 1/(2^bits - 1), x + 1/(2^bits - 1)], the edge
bins extended to -inf and +inf, so the 2^bits probabilities of a channel sum to 1 exactly. The
pixel's probability is sum_m pi_m prod_c P_m(x_c | x_<c).

Parameter layout along the last axis, P = M * (1 + 2C + C(C-1)/2) values (`num_params`):
  [logits (M) | means (C, M) | log_scales (C, M) | coeffs (K, M)],
K = C(C-1)/2 coefficients in the order (1,0), (2,0), (2,1), (3,0), ...: for RGB, G|R, B|R, B|G
(tanh applied, as the reference). For C = 3, M = 10 that is VDVAE's 100 channels; the order
differs from VDVAE's (which interleaves means, scales and coefficients per channel), so loading
a VDVAE checkpoint would permute its output convolution's channels.

Departures from the reference implementations (PixelCNN++ `discretized_mix_logistic_loss`,
VDVAE's PyTorch port):
- The data are integers (uint8 values 0..255, or 0..2^bits-1), so the edge bins are chosen by
  equality, not by `x < -0.999`; float inputs in [-1, 1] are rounded to their bin.
- log(sigmoid(a) - sigmoid(b)) is computed without cancellation as
  log_sigmoid(a) + log_sigmoid(-b) + log(1 - exp(-(a - b))), exact in every bin (the
  references subtract the CDFs and switch to a density approximation below 1e-5).
- Any channel count (greyscale C = 1 has no coefficients), and `bits` < 8 as VDVAE's 5-bit
  FFHQ-256.
- Sampling is exact: each channel's continuous logistic draw is quantised to its bin (round,
  clip) and the next channels' means use the quantised value, as the likelihood conditions on
  the data. The reference conditions on the unquantised draw and truncates with astype(uint8).
- Computed in float32 (float64 when given float64), whatever the network's compute dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

MIN_LOG_SCALE = -7.0  # the references' lower clamp of log scales


def num_coeffs(channels: int) -> int:
    """C(C-1)/2 channel-dependence coefficients per component."""
    return channels * (channels - 1) // 2


def num_params(channels: int, num_mixtures: int) -> int:
    """Parameters per pixel: M * (1 + 2C + C(C-1)/2); 10 M for RGB, 3 M for greyscale."""
    if channels < 1 or num_mixtures < 1:
        raise ValueError(f"DMoL needs channels >= 1 and num_mixtures >= 1, got {channels}, "
                         f"{num_mixtures}")
    return num_mixtures * (1 + 2 * channels + num_coeffs(channels))


class Mixture(NamedTuple):
    """A DMoL's parameters unpacked: logits (..., M), means and log_scales (..., C, M) (log
    scales clamped below at MIN_LOG_SCALE), coeffs (..., K, M) in (-1, 1)."""

    logits: jax.Array
    means: jax.Array
    log_scales: jax.Array
    coeffs: jax.Array


def _float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 -> f32; f64 stays


def unpack(params: jax.Array, channels: int) -> Mixture:
    """(..., P) network outputs -> `Mixture` (float32 at least); P must be `num_params`."""
    params = _float(params)
    per_mix = 1 + 2 * channels + num_coeffs(channels)
    p = params.shape[-1]
    if p % per_mix:
        raise ValueError(f"a DMoL over {channels} channels needs a multiple of {per_mix} "
                         f"parameters per pixel (M * (1 + 2C + C(C-1)/2)), got {p}")
    m, c, k = p // per_mix, channels, num_coeffs(channels)
    lead = params.shape[:-1]
    logits = params[..., :m]
    means = params[..., m:m + c * m].reshape(*lead, c, m)
    log_scales = params[..., m + c * m:m + 2 * c * m].reshape(*lead, c, m)
    coeffs = params[..., m + 2 * c * m:].reshape(*lead, k, m)
    return Mixture(logits, means, jnp.maximum(log_scales, MIN_LOG_SCALE), jnp.tanh(coeffs))


def pixel_values(x: jax.Array, bits: int = 8) -> jax.Array:
    """Images -> their integer values 0..2^bits-1 (int32): integer arrays as they are, floats
    taken as in [-1, 1] (k -> 2k / (2^bits - 1) - 1, the package's model range) and rounded."""
    x = jnp.asarray(x)
    top = 2**bits - 1
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(jnp.int32)
    return jnp.clip(jnp.round((_float(x) + 1.0) * (top / 2.0)), 0, top).astype(jnp.int32)


def _bin_centres(k: jax.Array, bits: int, dtype) -> jax.Array:
    return k.astype(dtype) * (2.0 / (2**bits - 1)) - 1.0


def _dependent_means(mix: Mixture, xf: jax.Array) -> jax.Array:
    """Means (..., C, M) of each channel given the pixel's preceding channel values xf (..., C)."""
    c = mix.means.shape[-2]
    rows, pair = [], 0
    for ch in range(c):
        mean = mix.means[..., ch, :]
        for j in range(ch):
            mean = mean + mix.coeffs[..., pair, :] * xf[..., j, None]
            pair += 1
        rows.append(mean)
    return jnp.stack(rows, axis=-2)


def _log1mexp(d: jax.Array) -> jax.Array:
    """log(1 - exp(-d)) for d > 0, accurate for small and large d (Maechler 2012); each
    branch sees only inputs where it is finite, so neither gives the other a NaN gradient."""
    big = d > math.log(2.0)
    return jnp.where(big, jnp.log1p(-jnp.exp(-jnp.where(big, d, 1.0))),
                     jnp.log(-jnp.expm1(-jnp.where(big, 0.5, d))))


def log_prob(params: jax.Array, x: jax.Array, *, bits: int = 8) -> jax.Array:
    """log P(x) per pixel in nats, the channels jointly: params (N, H, W, P) and images
    (N, H, W, C) (uint8 / integers, or floats in [-1, 1]) -> (N, H, W), float32 (float64 for
    float64 params)."""
    k = pixel_values(x, bits)
    c = k.shape[-1]
    mix = unpack(params, c)
    if mix.means.shape[:-2] != k.shape[:-1]:
        raise ValueError(f"DMoL params {params.shape} do not match images {x.shape}")
    dtype = mix.means.dtype
    xf = _bin_centres(k, bits, dtype)
    half = 1.0 / (2**bits - 1)
    centred = xf[..., None] - _dependent_means(mix, xf)  # (..., C, M)
    inv_scale = jnp.exp(-mix.log_scales)
    upper = inv_scale * (centred + half)  # standardised bin edges
    lower = inv_scale * (centred - half)
    log_cdf_upper = jax.nn.log_sigmoid(upper)  # P(X < upper): the bottom bin
    log_sf_lower = jax.nn.log_sigmoid(-lower)  # P(X > lower): the top bin
    width = jnp.maximum(2.0 * half * inv_scale, 1e-30)  # upper - lower, > 0
    log_mass = log_cdf_upper + log_sf_lower + _log1mexp(width)  # log(cdf(upper) - cdf(lower))
    kk = k[..., None]
    per_channel = jnp.where(kk == 0, log_cdf_upper,
                            jnp.where(kk == 2**bits - 1, log_sf_lower, log_mass))
    log_weights = jax.nn.log_softmax(mix.logits, axis=-1)
    return jax.nn.logsumexp(log_weights + jnp.sum(per_channel, axis=-2), axis=-1)


def log_likelihood(params: jax.Array, x: jax.Array, *, bits: int = 8) -> jax.Array:
    """log P(image) per example, nats: `log_prob` summed over the pixels -> (N,)."""
    lp = log_prob(params, x, bits=bits)
    return jnp.sum(lp.reshape(lp.shape[0], -1), axis=-1)


def sample(key: jax.Array, params: jax.Array, channels: int, *, bits: int = 8,
           greedy: bool = False) -> jax.Array:
    """Images drawn from the DMoL, params (N, H, W, P) -> uint8 (N, H, W, C) values
    0..2^bits-1 (bits <= 8). `greedy`: the most probable component and each logistic's centre
    (the noise set to 0), a deterministic image for reconstructions."""
    if not 1 <= bits <= 8:
        raise ValueError(f"DMoL sampling returns uint8: bits must be 1..8, got {bits}")
    mix = unpack(params, channels)
    dtype = mix.means.dtype
    mix_key, noise_key = jax.random.split(key)
    if greedy:
        comp = jnp.argmax(mix.logits, axis=-1)
    else:
        comp = jax.random.categorical(mix_key, mix.logits, axis=-1)
    onehot = jax.nn.one_hot(comp, mix.logits.shape[-1], dtype=dtype)[..., None, :]
    means, log_scales, coeffs = (jnp.sum(a * onehot, axis=-1)
                                 for a in (mix.means, mix.log_scales, mix.coeffs))
    if greedy:
        noise = jnp.zeros(means.shape, dtype)
    else:  # a logistic draw, from a uniform away from 0 and 1 as the references
        u = jax.random.uniform(noise_key, means.shape, dtype, 1e-5, 1.0 - 1e-5)
        noise = jnp.log(u) - jnp.log1p(-u)
    top = 2**bits - 1
    ks, centres, pair = [], [], 0
    for ch in range(channels):
        mean = means[..., ch]
        for j in range(ch):  # conditioned on the preceding channels' quantised values
            mean = mean + coeffs[..., pair] * centres[j]
            pair += 1
        y = mean + jnp.exp(log_scales[..., ch]) * noise[..., ch]
        ks.append(jnp.clip(jnp.round((y + 1.0) * (top / 2.0)), 0, top))  # y's bin
        centres.append(_bin_centres(ks[-1], bits, dtype))
    return jnp.stack(ks, axis=-1).astype(jnp.uint8)
