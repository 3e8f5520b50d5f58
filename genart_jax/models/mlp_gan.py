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
import ml_collections

from genart_jax.models.conditioning import check_labels, class_scale_shift, projection
from genart_jax.models.registry import Architecture, compute_dtype, register_architecture

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


def build(settings: ml_collections.ConfigDict, model: ml_collections.ConfigDict,
          data: ml_collections.ConfigDict, *, axis_name: str | None, bn_momentum: float
          ) -> tuple[MLPGenerator, MLPDiscriminator]:
    """(generator, discriminator) of `model.mlp_gan` for the data's image shape (no BatchNorm:
    `axis_name` and `bn_momentum` do not apply)."""
    del axis_name, bn_momentum
    dtype = compute_dtype(model.dtype)
    shape = (data.image_size, data.image_size, data.channels)
    g = MLPGenerator(out_shape=shape, hidden=tuple(settings.g_hidden), leak=settings.leak,
                     dtype=dtype, num_classes=model.num_classes)
    d = MLPDiscriminator(hidden=tuple(settings.d_hidden), leak=settings.leak, dtype=dtype,
                         num_classes=model.num_classes)
    return g, d


register_architecture(Architecture(
    "mlp", family="gan", section="mlp_gan", build=build,
    defaults={"g_hidden": (128, 256, 512, 1024), "d_hidden": (1024, 512, 256), "leak": 0.01},
    renamed={"mlp_g_hidden": "g_hidden", "mlp_d_hidden": "d_hidden", "mlp_leak": "leak"}))
