"""The origin document's fully connected GAN: G Dense 128-256-512-1024-(H*W*C) with
LeakyReLU(0.01) and tanh; D Dense 1024-512-256-1 with LeakyReLU(0.01), returning logits.

With `num_classes > 0` each hidden layer of the generator is scaled and shifted per class
(`class_scale_shift`) and the discriminator is a projection discriminator on its last hidden
layer (see `genart_jax.models.conditioning`); with `num_classes == 0` the models are
unchanged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genart_jax.models.conditioning import check_labels, class_scale_shift, projection

Dtype = Any


class MLPGenerator(nn.Module):
    """z (N, latent) [, labels (N,)] -> image (N, H, W, C) in [-1, 1]."""

    out_shape: Sequence[int] = (28, 28, 1)
    hidden: Sequence[int] = (128, 256, 512, 1024)
    leak: float = 0.01
    dtype: Dtype = jnp.float32
    num_classes: int = 0

    @nn.compact
    def __call__(self, z: jnp.ndarray, labels: jnp.ndarray | None = None, train: bool = True
                 ) -> jnp.ndarray:
        del train  # no batch statistics; the argument keeps one interface for all generators
        check_labels(labels, self.num_classes, "generator")
        x = z
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, dtype=self.dtype)(x)
            if self.num_classes > 0:
                x = class_scale_shift(x, labels, self.num_classes, f"film{i}")
            x = nn.leaky_relu(x, self.leak)
        x = nn.Dense(math.prod(self.out_shape), dtype=self.dtype)(x)
        return jnp.tanh(x.astype(jnp.float32)).reshape(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """image (N, H, W, C) [, labels (N,)] -> logits (N,); the sigmoid is applied inside the
    loss. Conditional: logit = linear(phi) + <embed(y), phi>, phi the last hidden layer."""

    hidden: Sequence[int] = (1024, 512, 256)
    leak: float = 0.01
    dtype: Dtype = jnp.float32
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: jnp.ndarray, labels: jnp.ndarray | None = None, train: bool = True
                 ) -> jnp.ndarray:
        del train
        check_labels(labels, self.num_classes, "discriminator")
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        for width in self.hidden:
            x = nn.leaky_relu(nn.Dense(width, dtype=self.dtype)(x), self.leak)
        logits = nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
        if self.num_classes > 0:
            logits = logits + projection(x, labels, self.num_classes, self.dtype)
        return logits
