"""Class conditioning shared by the GAN models: conditional BatchNorm (class-specific scale and
shift after a shared normalisation) for the DCGAN generator, a class-specific scale and shift of
each hidden layer for the MLP generator, and the projection term of projection discriminators
(Miyato & Koyama 2018, "cGANs with Projection Discriminator"). Called from inside a module's
compact `__call__`, so the layers they make are that module's submodules.

Measured on the digits (within-theme pixel std of samples; real digits 0.29): with a learned
label embedding concatenated to z instead, both generators ignored z (DCGAN 0.008, MLP 0.03);
with these, DCGAN 0.17 and MLP 0.17, themes still 99-100% right."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
PROJECTION_INIT = nn.initializers.normal(0.02)  # starts close to the unconditional logit


def check_labels(labels: jnp.ndarray | None, num_classes: int, what: str) -> None:
    """A conditional model needs labels and an unconditional one takes none: say which."""
    if num_classes > 0 and labels is None:
        raise ValueError(f"this {what} is conditional (num_classes={num_classes}): pass "
                         "labels, int32 class numbers of shape (N,)")
    if num_classes <= 0 and labels is not None:
        raise ValueError(f"this {what} is unconditional (num_classes=0) and takes no labels")


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own scale and bias, then a scale and shift looked up per class
    (initialised to 1 and 0): the class sets each channel's gain and offset after the batch
    statistics, so it cannot drown the latent's variation inside them (measured: with the label
    concatenated to z instead, the digits DCGAN ignored z, within-class pixel std 0.008 against
    0.29 for real digits)."""

    num_classes: int
    train: bool = True
    momentum: float = 0.9
    axis_name: str | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
        x = nn.BatchNorm(use_running_average=not self.train, momentum=self.momentum,
                         epsilon=1e-5, axis_name=self.axis_name if self.train else None,
                         dtype=self.dtype, use_scale=False, use_bias=False)(x)
        c = x.shape[-1]
        scale = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.ones,
                         name="scale")(labels)
        shift = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.zeros,
                         name="shift")(labels)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
        return x * scale.reshape(shape).astype(x.dtype) + shift.reshape(shape).astype(x.dtype)


def class_scale_shift(x: jnp.ndarray, labels: jnp.ndarray, num_classes: int, name: str
                      ) -> jnp.ndarray:
    """x * scale[y] + shift[y] per feature (tables start at 1 and 0): the class modulates a
    layer's features instead of entering beside z, where it drowned z (see
    `ConditionalBatchNorm`)."""
    c = x.shape[-1]
    scale = nn.Embed(num_classes, c, embedding_init=nn.initializers.ones,
                     name=f"{name}_scale")(labels)
    shift = nn.Embed(num_classes, c, embedding_init=nn.initializers.zeros,
                     name=f"{name}_shift")(labels)
    return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def projection(phi: jnp.ndarray, labels: jnp.ndarray, num_classes: int, dtype: Dtype
               ) -> jnp.ndarray:
    """<embed(labels), phi> (N,) in float32: the class term a projection discriminator adds to
    its unconditional logit linear(phi)."""
    emb = nn.Embed(num_classes, phi.shape[-1], embedding_init=PROJECTION_INIT, dtype=dtype,
                   name="projection")(labels)
    return jnp.sum(emb * phi, axis=-1).astype(jnp.float32)
