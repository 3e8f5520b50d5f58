"""A hierarchical VAE after VDVAE (Child, "Very Deep VAEs Generalize Autoregressive Models and
Can Outperform Them on Images", ICLR 2021; reference code openai/vdvae, `vae.py`,
`vae_helpers.py`; also read: j-towns/vdvae-jax), Flax Linen, NHWC, square images of any
channel count, the pixels modelled by a discretised mixture of logistics (`genart_jax.dmol`).

Followed from the reference code:
- Bottleneck blocks everywhere: GELU (exact) then conv 1x1 (w -> w/4), 3x3, 3x3, 1x1 (-> out),
  each conv preceded by a GELU; 1x1 convs instead of the 3x3s at resolutions <= 2. Biases zero,
  weights as PyTorch's default (uniform in +-1/sqrt(fan_in)).
- The encoder: a 3x3 conv from the image, residual blocks per resolution (e.g. 32, 16, 8, 4, 1),
  the last block of a resolution followed by average pooling to the next; each block's last
  conv scaled by sqrt(1 / number of encoder blocks) at init. The activation kept for the decoder
  at each resolution is the one before the pooling block (the reference's `activations[res]`).
- The top-down decoder: from the lowest resolution up, one latent group (zdim channels at that
  resolution) per block. A block reads the top-down state x and the encoder's activation:
  posterior q(z | x, acts) = N(qm, exp(qs)) from a block on concat(x, acts); prior
  p(z | x) = N(pm, exp(ps)) and a residual x += xpp from one block on x alone (its last conv
  zero at init, so the prior starts as N(0, I)); then x += conv1x1(z) and a residual block.
  z_proj and the residual block's last conv are scaled by sqrt(1 / number of decoder blocks)
  at init. Diagonal Gaussians parameterised by mean and log standard deviation; the KL is the
  closed form per group.
- Between resolutions: nearest-neighbour unpooling of the lower resolution's final state
  added to a learned per-resolution bias (`no_bias_above` as the reference: resolutions above
  it start from zero); at the image resolution a per-channel gain and bias, then a 1x1 conv to
  the DMoL's parameters (10 mixtures: 100 channels for RGB).
- Sampling with a temperature per group: z = pm + t * exp(ps) * eps (the reference adds log t
  to the log scale; t = 0 here gives the prior's mean). Latents can be fixed per group
  (the reference's `forward_samples_set_latents`).
- VDVAE's CIFAR-10 network (`vdvae_cifar10()`, from `hps.py`: width 384, zdim 16, encoder
  "32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3", decoder "1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,
  32x21") has 39,145,700 parameters here, the count of the reference's PyTorch module
  instantiated with those settings (`count_params`, `param_count`; tests/test_hvae.py).
  Checked once by hand (docs/hvae.md): with a small reference network's random weights copied
  in (widths changing between resolutions, a 2 px resolution, `no_bias_above` below the image
  size) and the same noise, the float64 forward pass gives the reference's per-group KLs and
  negative log-likelihood to a relative 2e-15.

Departures:
- Block counts per resolution (`resolutions`, `enc_blocks`, `dec_blocks`, `widths`) instead of
  the reference's layer strings; `from_vdvae_strings` converts those (the ones the reference
  ships: resolutions in order, pooling at the end of a resolution, unpooling at its start).
- Width changes between resolutions (the reference's `custom_width_str`) zero-pad or truncate
  channels in both directions; the reference pads in the encoder and truncates in the decoder.
- The image enters as uint8 values (or [-1, 1] floats, rounded to their bin), normalised by
  (x - input_mean) / input_std, two attributes (defaults 127.5 and 64, near the reference's
  CIFAR-10 statistics 120.64 and 64.17) rather than per-dataset constants in the data loader.
- Randomness is keyed per example: `key` may be one key per example (N,), and group g of
  example n draws from fold_in(key[n], g), so a batch split over devices draws the same
  numbers as on one device (as the package's other steps).
- Mixed precision: the blocks compute in `dtype` (bfloat16 for speed), parameters are float32,
  and the Gaussians' statistics, the latents, the KLs, the last 1x1 conv to the DMoL parameters
  and the likelihood are float32 (bfloat16's 8-bit mantissa is half an 8-bit bin near +-1).
- The DMoL's parameter order and its exact bin probabilities: see `genart_jax.dmol`.
- Training objectives are pure functions below (`elbo_terms`, `loss_per_dim`); the reference's
  `VAE.forward` returns the ELBO per dimension, ours the same after `loss_per_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genart_jax import dmol
from genart_jax.models.registry import Architecture, compute_dtype, register_architecture

Dtype = Any
Temperature = float | Sequence[float] | jax.Array


def vdvae_cifar10() -> dict[str, Any]:
    """HVAE keyword arguments of VDVAE's CIFAR-10 network (reference `hps.py`, cifar10)."""
    return dict(image_size=32, channels=3, resolutions=(32, 16, 8, 4, 1), widths=(384,) * 5,
                enc_blocks=(12, 7, 7, 4, 3), dec_blocks=(22, 11, 6, 3, 1), zdim=16,
                bottleneck=0.25, num_mixtures=10, no_bias_above=64)


def from_vdvae_strings(enc_blocks: str, dec_blocks: str, width: int,
                       custom_widths: str = "") -> dict[str, Any]:
    """`resolutions`, `widths`, `enc_blocks`, `dec_blocks` from the reference's layer strings
    ("32x11,32d2,16x6,..." and "1x1,4m1,4x2,...") and its `width` / `custom_width_str`
    ("32:256,16:384"); a ValueError for strings these counts cannot express."""
    def tokens(s: str) -> list[tuple[int, str, int]]:
        out = []
        for t in s.split(","):
            for sep in "xdm":
                if sep in t:
                    a, b = t.split(sep)
                    out.append((int(a), sep, int(b)))
                    break
            else:
                out.append((int(t), "x", 1))
        return out

    enc: dict[int, int] = {}
    order: list[int] = []
    pooled_to = None
    for res, kind, n in tokens(enc_blocks):
        if pooled_to is not None and res != pooled_to:
            raise ValueError(f"encoder string: after pooling to {pooled_to}, got {res}")
        if order and res != order[-1] and pooled_to is None:
            raise ValueError(f"encoder string: {res} follows {order[-1]} without pooling")
        if not order or res != order[-1]:
            order.append(res)
        enc[res] = enc.get(res, 0) + (1 if kind == "d" else n)
        pooled_to = res // n if kind == "d" else None
    if pooled_to is not None:
        raise ValueError(f"encoder string: ends pooling to {pooled_to} with no blocks there")
    dec: dict[int, int] = {}
    for res, kind, n in tokens(dec_blocks):
        new = res not in dec
        if (kind == "m") != (new and bool(dec)) or (kind == "m" and n != list(dec)[-1]):
            raise ValueError(f"decoder string: each resolution after the first must start with "
                             f"'{res}m<previous resolution>', got {res}{kind}{n}")
        dec[res] = dec.get(res, 0) + (1 if kind == "m" else n)
    if sorted(dec, reverse=True) != order or list(dec) != order[::-1]:
        raise ValueError(f"encoder resolutions {order} and decoder {list(dec)} differ")
    custom = {int(k): int(v) for k, v in (p.split(":") for p in custom_widths.split(",") if p)}
    return dict(resolutions=tuple(order), widths=tuple(custom.get(r, width) for r in order),
                enc_blocks=tuple(enc[r] for r in order), dec_blocks=tuple(dec[r] for r in order))


def check_schema(image_size: int, resolutions: Sequence[int], widths: Sequence[int],
                 enc_blocks: Sequence[int], dec_blocks: Sequence[int]) -> None:
    """A clear ValueError unless the per-resolution settings describe a network."""
    n = len(resolutions)
    if not n or resolutions[0] != image_size:
        raise ValueError(f"hvae: resolutions must start at the image size {image_size}, got "
                         f"{tuple(resolutions)}")
    if any(b >= a or a % b for a, b in zip(resolutions, resolutions[1:], strict=False)):
        raise ValueError(f"hvae: resolutions must fall, each dividing the one before, got "
                         f"{tuple(resolutions)}")
    if len(widths) != n or len(enc_blocks) != n or len(dec_blocks) != n:
        raise ValueError(f"hvae: one width, encoder and decoder block count per resolution "
                         f"({n}), got {len(widths)}, {len(enc_blocks)}, {len(dec_blocks)}")
    if min(widths) < 1 or min(dec_blocks) < 1 or min(enc_blocks[:-1], default=1) < 1 \
            or enc_blocks[-1] < 0:
        raise ValueError("hvae: widths and decoder blocks must be >= 1 per resolution, encoder "
                         "blocks >= 1 (each resolution but the lowest ends with a pooling block)")


def torch_default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """PyTorch's default conv init, U(+-1/sqrt(fan_in)), with its variance times `scale`
    (the reference multiplies weights by sqrt(scale)); scale 0 gives zeros."""
    if scale == 0:
        return nn.initializers.zeros
    return nn.initializers.variance_scaling(scale / 3.0, "fan_in", "uniform")


def _conv(features: int, kernel: int, dtype: Dtype, scale: float = 1.0,
          name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), padding="SAME", dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=torch_default_init(scale),
                   bias_init=nn.initializers.zeros, name=name)


def fit_width(x: jax.Array, width: int) -> jax.Array:
    """Channels zero-padded or truncated to `width`."""
    c = x.shape[-1]
    if c == width:
        return x
    if c > width:
        return x[..., :width]
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - c)])


def avg_pool(x: jax.Array, rate: int) -> jax.Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // rate, rate, w // rate, rate, c).mean(axis=(2, 4)).astype(x.dtype)


def unpool(x: jax.Array, rate: int) -> jax.Array:
    """Nearest-neighbour upsampling by `rate`."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, rate, w, rate, c))
    return x.reshape(n, h * rate, w * rate, c)


class Block(nn.Module):
    """VDVAE's bottleneck: conv1x1(gelu(x)) -> 3x3 -> 3x3 -> conv1x1 to `out`, each conv after
    a GELU; x + that if `residual`. `last_scale` multiplies the last conv's init variance."""

    middle: int
    out: int
    use_3x3: bool = True
    residual: bool = False
    last_scale: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = 3 if self.use_3x3 else 1
        gelu = lambda h: nn.gelu(h, approximate=False)
        h = _conv(self.middle, 1, self.dtype)(gelu(x))
        h = _conv(self.middle, k, self.dtype)(gelu(h))
        h = _conv(self.middle, k, self.dtype)(gelu(h))
        h = _conv(self.out, 1, self.dtype, self.last_scale)(gelu(h))
        return x + h if self.residual else h


class DecBlock(nn.Module):
    """One latent group at one resolution: its prior p(z | x) and posterior q(z | x, acts) from
    the top-down state x, then x += conv1x1(z) and a residual block."""

    width: int
    zdim: int
    bottleneck: float
    use_3x3: bool
    num_blocks: int  # decoder blocks in all, for the init scaling
    dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(middle=int(self.width * self.bottleneck), use_3x3=self.use_3x3,
                  dtype=self.dtype)
        self.enc = Block(out=2 * self.zdim, **kw)
        self.prior = Block(out=2 * self.zdim + self.width, last_scale=0.0, **kw)
        self.z_proj = _conv(self.width, 1, self.dtype, 1.0 / self.num_blocks)
        self.resnet = Block(out=self.width, residual=True, last_scale=1.0 / self.num_blocks,
                            **kw)

    def __call__(self, x: jax.Array, eps: jax.Array, acts: jax.Array | None = None,
                 temperature: jax.Array | float = 1.0, latent: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """(new state, z, KL per example (N,) or None). With `acts`: z ~ q, reparameterised
        by `eps`, and the KL; else z = `latent` if given, or z ~ p at `temperature`."""
        feats = self.prior(x)
        z2 = 2 * self.zdim
        pm, ps = jnp.split(_at_least_f32(feats[..., :z2]), 2, axis=-1)
        kl = None
        if acts is not None:  # the posterior reads the state before the prior's residual
            q = self.enc(jnp.concatenate([x, acts.astype(x.dtype)], axis=-1))
            qm, qs = jnp.split(_at_least_f32(q), 2, axis=-1)
            z = qm + jnp.exp(qs) * eps
            kl = jnp.sum(gaussian_kl(qm, qs, pm, ps).reshape(z.shape[0], -1), axis=-1)
        elif latent is not None:
            z = _at_least_f32(latent)
        else:
            z = pm + temperature * jnp.exp(ps) * eps
        x = x + feats[..., z2:]
        x = self.resnet(x + self.z_proj(z.astype(self.dtype)))
        return x, z, kl


def _at_least_f32(x: jax.Array) -> jax.Array:
    """bfloat16 -> float32; float32 stays, and float64 (tests in x64 mode) too."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def gaussian_kl(mu_q: jax.Array, logsigma_q: jax.Array, mu_p: jax.Array, logsigma_p: jax.Array
                ) -> jax.Array:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) elementwise, from log standard deviations:
    log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2."""
    return (-0.5 + logsigma_p - logsigma_q
            + 0.5 * (jnp.exp(2.0 * logsigma_q) + (mu_q - mu_p) ** 2) * jnp.exp(-2.0 * logsigma_p))


def _is_batch_of_keys(key: jax.Array) -> bool:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 1
    return key.ndim == 2  # raw uint32 keys (N, 2)


def _normal(key: jax.Array, group: int, n: int, shape: tuple[int, ...]) -> jax.Array:
    """N(0, I) noise (n, *shape), float32, of latent group `group`: from fold_in(key[i], group)
    per example when `key` holds one key per example, else from fold_in(key, group)."""
    if _is_batch_of_keys(key):
        if key.shape[0] != n:
            raise ValueError(f"hvae: {key.shape[0]} keys for {n} examples")
        return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, group), shape))(key)
    return jax.random.normal(jax.random.fold_in(key, group), (n, *shape))


class HVAE(nn.Module):
    """The hierarchical VAE (module docstring). Images (N, S, S, C) uint8 (or [-1, 1] floats);
    every output float32.

    - `__call__(x, key=...)`: the training forward pass, z ~ q for every group ->
      (DMoL parameters (N, S, S, P), KL per group (N, G) in nats).
    - `sample(n, key=..., temperature=1.0, latents=())`: decoder from the prior, a
      temperature per group (one value or G, traced: no recompiling per value) and optionally
      the first groups' latents given -> DMoL parameters.
    - `reconstruct(x, key=..., num_groups=None, temperature=1.0)`: the posterior's latents for
      the first `num_groups` groups (all by default), the prior's after -> DMoL parameters.
    - `encode(x)`: the encoder's activations per resolution.
    `key`: one PRNG key, or one per example (N,).
    """

    image_size: int = 32
    channels: int = 3
    resolutions: Sequence[int] = (32, 16, 8, 4, 1)
    widths: Sequence[int] = (384, 384, 384, 384, 384)
    enc_blocks: Sequence[int] = (12, 7, 7, 4, 3)  # per resolution; the last pools (not at 1)
    dec_blocks: Sequence[int] = (22, 11, 6, 3, 1)  # latent groups per resolution
    zdim: int = 16
    bottleneck: float = 0.25
    num_mixtures: int = 10
    no_bias_above: int = 64
    input_mean: float = 127.5
    input_std: float = 64.0
    dtype: Dtype = jnp.float32

    def setup(self):
        check_schema(self.image_size, self.resolutions, self.widths, self.enc_blocks,
                     self.dec_blocks)
        n_enc, n_dec = sum(self.enc_blocks), sum(self.dec_blocks)
        self.in_conv = _conv(self.widths[0], 3, self.dtype)
        encoder = []
        for res, width, count in zip(self.resolutions, self.widths, self.enc_blocks,
                                     strict=True):
            encoder += [Block(int(width * self.bottleneck), width, use_3x3=res > 2,
                              residual=True, last_scale=1.0 / n_enc, dtype=self.dtype)
                        for _ in range(count)]
        self.encoder = encoder
        decoder, biases = [], []
        for res, width, count in reversed(list(zip(self.resolutions, self.widths,
                                                   self.dec_blocks, strict=True))):
            decoder += [DecBlock(width, self.zdim, self.bottleneck, use_3x3=res > 2,
                                 num_blocks=n_dec, dtype=self.dtype) for _ in range(count)]
            if res <= self.no_bias_above:
                biases.append(self.param(f"bias_x{res}", nn.initializers.zeros,
                                         (res, res, width), jnp.float32))
            else:
                biases.append(None)
        self.decoder = decoder
        self.start_bias = biases
        self.gain = self.param("gain", nn.initializers.ones, (self.widths[0],), jnp.float32)
        self.bias = self.param("bias", nn.initializers.zeros, (self.widths[0],), jnp.float32)
        self.out_conv = nn.Conv(dmol.num_params(self.channels, self.num_mixtures), (1, 1),
                                dtype=jnp.promote_types(self.dtype, jnp.float32),
                                param_dtype=jnp.float32,
                                kernel_init=torch_default_init(),
                                bias_init=nn.initializers.zeros)

    @property
    def num_groups(self) -> int:
        return sum(self.dec_blocks)

    def latent_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """The shape (r, r, zdim) of each latent group, in decoder order (lowest r first)."""
        return tuple((r, r, self.zdim) for r, count in zip(self.resolutions[::-1],
                                                           self.dec_blocks[::-1], strict=True)
                     for _ in range(count))

    def encode(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """uint8 (N, S, S, C) -> the encoder's activation at each resolution (in `resolutions`
        order): the state before that resolution's pooling block."""
        if x.shape[1:] != (self.image_size, self.image_size, self.channels):
            raise ValueError(f"hvae expects images (N, {self.image_size}, {self.image_size}, "
                             f"{self.channels}), got {x.shape}")
        k = dmol.pixel_values(x).astype(jnp.float32)
        h = self.in_conv(((k - self.input_mean) / self.input_std).astype(self.dtype))
        acts, blocks = [], iter(self.encoder)
        last = len(self.resolutions) - 1
        for i, count in enumerate(self.enc_blocks):
            for b in range(count):
                pools = i < last and b == count - 1
                if pools:
                    acts.append(h)
                h = next(blocks)(h)
                if pools:
                    h = avg_pool(h, self.resolutions[i] // self.resolutions[i + 1])
                    h = fit_width(h, self.widths[i + 1])
            if i == last:
                acts.append(h)
        return tuple(acts)

    def _temperatures(self, temperature: Temperature) -> jax.Array:
        t = jnp.asarray(temperature, jnp.float32)
        if t.ndim == 0:
            return jnp.broadcast_to(t, (self.num_groups,))
        if t.shape != (self.num_groups,):
            raise ValueError(f"hvae: give one temperature or one per latent group "
                             f"({self.num_groups}), got shape {t.shape}")
        return t

    def _decode(self, n: int, key: jax.Array, acts: Sequence[jax.Array] | None = None,
                num_posterior: int = 0, temperature: Temperature = 1.0,
                latents: Sequence[jax.Array | None] = ()
                ) -> tuple[jax.Array, jax.Array | None, tuple[jax.Array, ...]]:
        """Top-down pass -> (DMoL parameters, KLs (N, num_posterior) or None, latents)."""
        temps = self._temperatures(temperature)
        if len(latents) > self.num_groups:
            raise ValueError(f"hvae: {len(latents)} latents for {self.num_groups} groups")
        blocks, g, prev, kls, zs = iter(self.decoder), 0, None, [], []
        order = list(zip(self.resolutions, self.widths, self.dec_blocks, strict=True))[::-1]
        for i, (res, width, count) in enumerate(order):
            bias = self.start_bias[i]
            x = (jnp.zeros((n, res, res, width), self.dtype) if bias is None
                 else jnp.broadcast_to(bias.astype(self.dtype), (n, res, res, width)))
            if prev is not None:
                x = x + unpool(fit_width(prev, width), res // prev.shape[1])
            for _ in range(count):
                eps = _normal(key, g, n, (res, res, self.zdim))
                use_q = acts is not None and g < num_posterior
                latent = latents[g] if g < len(latents) else None
                x, z, kl = next(blocks)(x, eps, acts[len(order) - 1 - i] if use_q else None,
                                        temps[g], latent)
                zs.append(z)
                if kl is not None:
                    kls.append(kl)
                g += 1
            prev = x
        h = _at_least_f32(prev) * self.gain[None, None, None] + self.bias[None, None, None]
        out = self.out_conv(h)
        return out, (jnp.stack(kls, axis=-1) if kls else None), tuple(zs)

    def __call__(self, x: jax.Array, *, key: jax.Array, return_latents: bool = False):
        """Training forward pass: (DMoL parameters (N, S, S, P), KL per group (N, G)) [, the
        posterior latents per group]."""
        params, kls, zs = self._decode(x.shape[0], key, self.encode(x), self.num_groups)
        return (params, kls, zs) if return_latents else (params, kls)

    def sample(self, n: int, *, key: jax.Array, temperature: Temperature = 1.0,
               latents: Sequence[jax.Array | None] = (), return_latents: bool = False):
        """DMoL parameters of n draws from the prior [, the latents per group]; `latents[g]`
        (n, r, r, zdim), where given (not None), replaces group g's draw."""
        params, _, zs = self._decode(n, key, temperature=temperature, latents=latents)
        return (params, zs) if return_latents else params

    def reconstruct(self, x: jax.Array, *, key: jax.Array, num_groups: int | None = None,
                    temperature: Temperature = 1.0) -> jax.Array:
        """DMoL parameters with the posterior's latents in the first `num_groups` groups (all
        when None: the training pass's output for the same key) and prior draws after."""
        k = self.num_groups if num_groups is None else num_groups
        return self._decode(x.shape[0], key, self.encode(x), k, temperature)[0]


# ---------------------------------------------------------------------------------------------
# The objective (pure functions) and images from the model.


def elbo_terms(dmol_params: jax.Array, x: jax.Array, kls: jax.Array, *, bits: int = 8
               ) -> dict[str, jax.Array]:
    """Per example (N,), float32: `distortion` = -log p(x | z) and `rate` = the KLs summed
    over groups, in nats; `neg_elbo` = their sum; `bits_per_dim` = neg_elbo / (H W C ln 2)."""
    distortion = -dmol.log_likelihood(dmol_params, x, bits=bits)
    rate = jnp.sum(_at_least_f32(kls), axis=-1)
    neg_elbo = distortion + rate
    num_dims = math.prod(x.shape[1:])
    return dict(distortion=distortion, rate=rate, neg_elbo=neg_elbo,
                bits_per_dim=neg_elbo / (num_dims * math.log(2.0)))


def loss_per_dim(terms: dict[str, jax.Array], num_dims: int) -> jax.Array:
    """The training objective: the batch's mean negative ELBO in nats per dimension (VDVAE's
    `elbo`, the scale of its gradient-clip and skip thresholds)."""
    return jnp.mean(terms["neg_elbo"]) / num_dims


def sample_images(model: HVAE, variables: Any, key: jax.Array, n: int, *,
                  temperature: Temperature = 1.0, greedy_pixels: bool = False) -> jax.Array:
    """n images (uint8) from the prior at `temperature`, pixels drawn from the DMoL (or its
    most probable component's centre with `greedy_pixels`)."""
    z_key, px_key = jax.random.split(key)
    params = model.apply(variables, n, key=z_key, temperature=temperature, method=model.sample)
    return dmol.sample(px_key, params, model.channels, greedy=greedy_pixels)


def reconstruct_images(model: HVAE, variables: Any, x: jax.Array, key: jax.Array, *,
                       num_groups: int | None = None, temperature: Temperature = 1.0,
                       greedy_pixels: bool = True) -> jax.Array:
    """Reconstructions (uint8) of x from the first `num_groups` groups' posterior latents."""
    z_key, px_key = jax.random.split(key)
    params = model.apply(variables, x, key=z_key, num_groups=num_groups,
                         temperature=temperature, method=model.reconstruct)
    return dmol.sample(px_key, params, model.channels, greedy=greedy_pixels)


def param_count(model: HVAE) -> int:
    """The number of parameters of `model`, from its initialiser's shapes (traced, nothing
    computed; seconds for the CIFAR-10 network: `count_params` counts without tracing)."""
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.channels), jnp.uint8)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, key=jax.random.key(1)), x)
    return sum(math.prod(p.shape) for p in jax.tree.leaves(shapes))


def count_params(image_size: int = 32, channels: int = 3,
                 resolutions: Sequence[int] = (32, 16, 8, 4, 1),
                 widths: Sequence[int] = (384,) * 5, enc_blocks: Sequence[int] = (12, 7, 7, 4, 3),
                 dec_blocks: Sequence[int] = (22, 11, 6, 3, 1), zdim: int = 16,
                 bottleneck: float = 0.25, num_mixtures: int = 10, no_bias_above: int = 64,
                 **_: Any) -> int:
    """The parameter count of `HVAE(**same arguments)` by formula, instantly (for configs and
    recipes; equal to `param_count`, tested). Other HVAE attributes are ignored."""
    check_schema(image_size, resolutions, widths, enc_blocks, dec_blocks)

    def conv(k: int, cin: int, cout: int) -> int:
        return k * k * cin * cout + cout

    def block(cin: int, width: int, out: int, res: int) -> int:
        mid, k = int(width * bottleneck), (3 if res > 2 else 1)
        return conv(1, cin, mid) + 2 * conv(k, mid, mid) + conv(1, mid, out)

    total = conv(3, channels, widths[0]) + 2 * widths[0]
    total += conv(1, widths[0], dmol.num_params(channels, num_mixtures))
    for res, w, n_enc, n_dec in zip(resolutions, widths, enc_blocks, dec_blocks, strict=True):
        total += n_enc * block(w, w, w, res)
        total += n_dec * (block(2 * w, w, 2 * zdim, res) + block(w, w, 2 * zdim + w, res)
                          + conv(1, zdim, w) + block(w, w, w, res))
        total += res * res * w if res <= no_bias_above else 0
    return total


# ---------------------------------------------------------------------------------------------
# The architecture `model.arch="hvae"` (family "vae", trained and served by the "hvae" hooks of
# `genart_jax.train.families`); its settings are `model.hvae.*`, its optimizer and step `hvae.*`.

SETTINGS = ("resolutions", "widths", "enc_blocks", "dec_blocks", "zdim", "bottleneck",
            "num_mixtures", "no_bias_above")


def build(settings: Any, cfg: Any) -> HVAE:
    """The HVAE of a config: `model.hvae.*` at `data.image_size` x `data.channels`, computing
    in `model.dtype`."""
    kw = {k: (tuple(settings[k]) if isinstance(settings[k], tuple | list) else settings[k])
          for k in SETTINGS}
    return HVAE(image_size=cfg.data.image_size, channels=cfg.data.channels,
                dtype=compute_dtype(cfg.model.dtype), **kw)


def check(settings: Any, cfg: Any) -> None:
    """The settings describe a network for the data's size; an unconditional model."""
    try:
        check_schema(cfg.data.image_size, tuple(settings.resolutions), tuple(settings.widths),
                     tuple(settings.enc_blocks), tuple(settings.dec_blocks))
    except ValueError as e:
        raise ValueError(f"{e} (config keys model.hvae.resolutions, .widths, .enc_blocks, "
                         f".dec_blocks; data.image_size {cfg.data.image_size})") from e
    if not 0 < settings.bottleneck <= 1 or int(min(settings.widths) * settings.bottleneck) < 1:
        raise ValueError(f"config key 'model.hvae.bottleneck' must be in (0, 1] and leave each "
                         f"block >= 1 channel, got {settings.bottleneck}")
    if cfg.model.num_classes:
        raise ValueError("model.arch 'hvae' is unconditional: set model.num_classes=0")


_CIFAR = vdvae_cifar10()
register_architecture(Architecture(
    "hvae", family="vae", section="hvae", hooks="hvae", convolutional=True,
    build=build, check=check, positive=("zdim", "num_mixtures", "no_bias_above"),
    defaults={k: _CIFAR[k] for k in SETTINGS}))  # VDVAE's CIFAR-10 network at 32 px
