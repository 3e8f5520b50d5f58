"""Class conditioning shared by the GAN models: a learned label embedding for generators and the
projection term of projection discriminators (Miyato & Koyama 2018, "cGANs with Projection
Discriminator"). Called from inside a module's compact `__call__`, so the layers they make are
that module's submodules."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
LABEL_INIT = nn.initializers.normal(1.0)  # label vectors on the scale of z ~ N(0, I)
PROJECTION_INIT = nn.initializers.normal(0.02)  # starts close to the unconditional logit


def check_labels(labels: jnp.ndarray | None, num_classes: int, what: str) -> None:
    """A conditional model needs labels and an unconditional one takes none: say which."""
    if num_classes > 0 and labels is None:
        raise ValueError(f"this {what} is conditional (num_classes={num_classes}): pass "
                         "labels, int32 class numbers of shape (N,)")
    if num_classes <= 0 and labels is not None:
        raise ValueError(f"this {what} is unconditional (num_classes=0) and takes no labels")


def concat_label_embedding(z: jnp.ndarray, labels: jnp.ndarray, num_classes: int,
                           features: int) -> jnp.ndarray:
    """[z, embed(labels)] (N, latent + features): the class enters the generator as a learned
    vector beside the noise, in float32 params, the same dtype as z."""
    emb = nn.Embed(num_classes, features, embedding_init=LABEL_INIT, name="label_embed")(labels)
    return jnp.concatenate([z, emb.astype(z.dtype)], axis=-1)


def projection(phi: jnp.ndarray, labels: jnp.ndarray, num_classes: int, dtype: Dtype
               ) -> jnp.ndarray:
    """<embed(labels), phi> (N,) in float32: the class term a projection discriminator adds to
    its unconditional logit linear(phi)."""
    emb = nn.Embed(num_classes, phi.shape[-1], embedding_init=PROJECTION_INIT, dtype=dtype,
                   name="projection")(labels)
    return jnp.sum(emb * phi, axis=-1).astype(jnp.float32)
