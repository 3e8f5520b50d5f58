"""Variational autoencoders: an MLP VAE (the origin document's encoder -> (mu, log sigma^2) ->
decoder, `model.arch` "mlp") and a convolutional VAE for square images of 4 * 2^k pixels, any
channel count ("conv"), each registered with its config section (`model.mlp_vae`,
`model.conv_vae`).
With `num_classes > 0` the label (one-hot) is an input to both encoder and decoder: a
conditional VAE, whose theme is chosen at sampling time.

The decoder returns the likelihood's parameter per pixel (Bernoulli logits or Gaussian means);
with `learned_scale` the module also holds a per-pixel log standard deviation `log_scale`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from genart_jax.models.dcgan import DownConv, UpConv, dcgan_init, num_stages
from genart_jax.models.registry import Architecture, compute_dtype, register_architecture

Dtype = Any


def _with_label(h: jnp.ndarray, y: jnp.ndarray | None, num_classes: int) -> jnp.ndarray:
    if num_classes <= 0:
        return h
    if y is None:
        raise ValueError("this VAE is conditional (num_classes > 0): give labels")
    return jnp.concatenate([h, jax.nn.one_hot(y, num_classes, dtype=h.dtype)], axis=-1)


class _VAE(nn.Module):
    """What every VAE shares: the posterior head, labels, the learned scale, the init path.
    A subclass sets up `enc_head` (after its own layers) and defines `features(x)` -> (N, F)
    and `decode(z, y)`."""
    image_shape: Sequence[int] = (28, 28, 1)
    latent_dim: int = 16
    num_classes: int = 0
    learned_scale: bool = False
    dtype: Dtype = jnp.float32

    def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """x (N, H, W, C) in [-1, 1] -> (mu, logvar), each (N, latent), float32."""
        h = self.features(x.astype(self.dtype))
        out = self.enc_head(_with_label(h, y, self.num_classes)).astype(jnp.float32)
        mu, logvar = jnp.split(out, 2, axis=-1)
        return mu, logvar

    def __call__(self, x: jnp.ndarray, y: jnp.ndarray | None = None):
        """Initialisation path: touches every parameter. Returns (mu, logvar, decoded mean)."""
        mu, logvar = self.encode(x, y)
        out = self.decode(mu, y)
        if self.learned_scale:
            out = out + 0.0 * self.log_scale[None]
        return mu, logvar, out


def _head_and_scale(vae: _VAE) -> None:
    """In a subclass's setup: the posterior head and, with `learned_scale`, a per-pixel log
    standard deviation `log_scale`."""
    vae.enc_head = nn.Dense(2 * vae.latent_dim, dtype=vae.dtype, name="enc_head")
    if vae.learned_scale:
        vae.log_scale = vae.param("log_scale", nn.initializers.zeros, tuple(vae.image_shape))


class MLPVAE(_VAE):
    """Dense encoder of widths `hidden` (ReLU), the decoder mirrors them."""
    hidden: Sequence[int] = (512, 256)

    def setup(self):
        self.enc_dense = [nn.Dense(n, dtype=self.dtype, name=f"enc{i}")
                          for i, n in enumerate(self.hidden)]
        self.dec_dense = [nn.Dense(n, dtype=self.dtype, name=f"dec{i}")
                          for i, n in enumerate(reversed(self.hidden))]
        self.dec_out_dense = nn.Dense(math.prod(self.image_shape), dtype=self.dtype,
                                      name="dec_out")
        _head_and_scale(self)

    def features(self, h: jnp.ndarray) -> jnp.ndarray:
        h = h.reshape(h.shape[0], -1)
        for dense in self.enc_dense:
            h = nn.relu(dense(h))
        return h

    def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
        """z (N, latent) -> per-pixel likelihood parameters (N, H, W, C), float32."""
        h = _with_label(z.astype(self.dtype), y, self.num_classes)
        for dense in self.dec_dense:
            h = nn.relu(dense(h))
        return self.dec_out_dense(h).reshape(z.shape[0], *self.image_shape).astype(jnp.float32)


class ConvVAE(_VAE):
    """k4/s2 convolutions from `width` channels, doubling per stage down to 4x4 (LeakyReLU
    0.2); the decoder mirrors them with k4/s2 transposed convolutions (ReLU)."""
    width: int = 32
    conv_forms: str = "auto"  # "auto" | "xla", see `resample_conv.FORMS`

    def setup(self):
        h, w, c = self.image_shape
        if h != w:
            raise ValueError(f"the conv VAE needs square images, got {h}x{w}")
        self.stages = num_stages(h)
        self.enc_convs = [DownConv(self.width * 2**i, use_bias=True, dtype=self.dtype,
                                   conv_forms=self.conv_forms,
                                   kernel_init=nn.initializers.lecun_normal(),
                                   name=f"enc_conv{i}") for i in range(self.stages)]
        c0 = self.width * 2 ** (self.stages - 1)
        self.dec_in = nn.Dense(4 * 4 * c0, dtype=self.dtype, name="dec_in")
        self.dec_ups = [UpConv(c0 // 2 ** (i + 1), use_bias=True, dtype=self.dtype,
                               conv_forms=self.conv_forms,
                               kernel_init=nn.initializers.lecun_normal(),
                               name=f"dec_up{i}") for i in range(self.stages - 1)]
        self.dec_out = UpConv(c, use_bias=True, dtype=self.dtype, kernel_init=dcgan_init,
                              conv_forms=self.conv_forms, name="dec_out")
        _head_and_scale(self)

    def features(self, h: jnp.ndarray) -> jnp.ndarray:
        for conv in self.enc_convs:
            h = nn.leaky_relu(conv(h), 0.2)
        return h.reshape(h.shape[0], -1)

    def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
        """z (N, latent) -> per-pixel likelihood parameters (N, H, W, C), float32."""
        h = _with_label(z.astype(self.dtype), y, self.num_classes)
        c0 = self.width * 2 ** (self.stages - 1)
        h = nn.relu(self.dec_in(h)).reshape(z.shape[0], 4, 4, c0)
        for up in self.dec_ups:
            h = nn.relu(up(h))
        return self.dec_out(h).astype(jnp.float32)


def _shared(cfg: ml_collections.ConfigDict) -> dict:
    """The constructor arguments every VAE takes from a config: a learned per-pixel scale only
    for a Gaussian likelihood with vae.scale == "learned"."""
    return dict(image_shape=(cfg.data.image_size, cfg.data.image_size, cfg.data.channels),
                latent_dim=cfg.model.latent_dim, num_classes=cfg.model.num_classes,
                learned_scale=cfg.vae.likelihood == "gaussian" and cfg.vae.scale == "learned",
                dtype=compute_dtype(cfg.model.dtype))


register_architecture(Architecture(
    "mlp", family="vae", section="mlp_vae",
    build=lambda settings, cfg: MLPVAE(hidden=tuple(settings.hidden), **_shared(cfg)),
    defaults={"hidden": (512, 256)},  # encoder widths (the decoder mirrors them)
    renamed={"vae_hidden": "hidden"}))
register_architecture(Architecture(
    "conv", family="vae", section="conv_vae", convolutional=True,
    build=lambda settings, cfg: ConvVAE(width=settings.width, conv_forms=cfg.model.conv_forms,
                                        **_shared(cfg)),
    defaults={"width": 32},  # channels of the first encoder stage (the decoder mirrors them)
    positive=("width",), renamed={"vae_width": "width"}))
