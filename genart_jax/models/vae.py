"""Variational autoencoders: an MLP VAE (the origin document's encoder -> (mu, log sigma^2) ->
decoder) and a convolutional VAE for square images of 4 * 2^k pixels, any channel count.
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

from genart_jax.models.dcgan import DownConv, UpConv, dcgan_init, num_stages

Dtype = Any


def _with_label(h: jnp.ndarray, y: jnp.ndarray | None, num_classes: int) -> jnp.ndarray:
    if num_classes <= 0:
        return h
    if y is None:
        raise ValueError("this VAE is conditional (num_classes > 0): give labels")
    return jnp.concatenate([h, jax.nn.one_hot(y, num_classes, dtype=h.dtype)], axis=-1)


class VAE(nn.Module):
    arch: str = "mlp"  # "mlp" | "conv"
    image_shape: Sequence[int] = (28, 28, 1)
    latent_dim: int = 16
    hidden: Sequence[int] = (512, 256)  # mlp: encoder widths (decoder mirrors them)
    width: int = 32  # conv: channels of the first encoder stage (decoder mirrors them)
    num_classes: int = 0
    learned_scale: bool = False
    dtype: Dtype = jnp.float32
    conv_forms: str = "auto"  # conv: "auto" | "xla", see `resample_conv.FORMS`

    def setup(self):
        h, w, c = self.image_shape
        if self.arch == "conv":
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
        elif self.arch == "mlp":
            self.enc_dense = [nn.Dense(n, dtype=self.dtype, name=f"enc{i}")
                              for i, n in enumerate(self.hidden)]
            self.dec_dense = [nn.Dense(n, dtype=self.dtype, name=f"dec{i}")
                              for i, n in enumerate(reversed(self.hidden))]
            self.dec_out_dense = nn.Dense(math.prod(self.image_shape), dtype=self.dtype,
                                          name="dec_out")
        else:
            raise ValueError(f"unknown VAE arch {self.arch!r}; choose 'mlp' or 'conv'")
        self.enc_head = nn.Dense(2 * self.latent_dim, dtype=self.dtype, name="enc_head")
        if self.learned_scale:
            self.log_scale = self.param("log_scale", nn.initializers.zeros,
                                        tuple(self.image_shape))

    def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """x (N, H, W, C) in [-1, 1] -> (mu, logvar), each (N, latent), float32."""
        h = x.astype(self.dtype)
        if self.arch == "conv":
            for conv in self.enc_convs:
                h = nn.leaky_relu(conv(h), 0.2)
        h = h.reshape(h.shape[0], -1)
        if self.arch == "mlp":
            for dense in self.enc_dense:
                h = nn.relu(dense(h))
        out = self.enc_head(_with_label(h, y, self.num_classes)).astype(jnp.float32)
        mu, logvar = jnp.split(out, 2, axis=-1)
        return mu, logvar

    def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
        """z (N, latent) -> per-pixel likelihood parameters (N, H, W, C), float32."""
        h = _with_label(z.astype(self.dtype), y, self.num_classes)
        if self.arch == "conv":
            c0 = self.width * 2 ** (self.stages - 1)
            h = nn.relu(self.dec_in(h)).reshape(z.shape[0], 4, 4, c0)
            for up in self.dec_ups:
                h = nn.relu(up(h))
            out = self.dec_out(h)
        else:
            for dense in self.dec_dense:
                h = nn.relu(dense(h))
            out = self.dec_out_dense(h).reshape(z.shape[0], *self.image_shape)
        return out.astype(jnp.float32)

    def __call__(self, x: jnp.ndarray, y: jnp.ndarray | None = None):
        """Initialisation path: touches every parameter. Returns (mu, logvar, decoded mean)."""
        mu, logvar = self.encode(x, y)
        out = self.decode(mu, y)
        if self.learned_scale:
            out = out + 0.0 * self.log_scale[None]
        return mu, logvar, out
