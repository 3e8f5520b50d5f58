"""Augmentation on device, per example, differentiable: random horizontal flip (for real images)
and DiffAugment (Zhao et al. 2020: colour, translation, cutout), which a GAN applies to real and
generated images alike before the discriminator so that D cannot overfit a small dataset while
G still gets gradients through the augmentation. Images are (H, W, C) in [-1, 1]; each function
takes one example and its own key (vmapped over the batch by `augment_batch`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> a tuple; '' -> (); unknown names are a ValueError."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment policy {bad}; choose from {POLICIES}")
    return names


def flip(key: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key), x[:, ::-1], x)


def color(key: jax.Array, x: jax.Array) -> jax.Array:
    kb, ks, kc = jax.random.split(key, 3)
    x = x + (jax.random.uniform(kb) - 0.5)  # brightness
    mean_c = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - mean_c) * (jax.random.uniform(ks) * 2.0) + mean_c  # saturation
    mean = jnp.mean(x)
    return (x - mean) * (jax.random.uniform(kc) + 0.5) + mean  # contrast


def translation(key: jax.Array, x: jax.Array, ratio: float = 0.125) -> jax.Array:
    h, w, c = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = jax.random.randint(key, (), -sh, sh + 1)
    dx = jax.random.randint(jax.random.fold_in(key, 1), (), -sw, sw + 1)
    padded = jnp.pad(x, ((sh, sh), (sw, sw), (0, 0)))
    return lax.dynamic_slice(padded, (sh - dy, sw - dx, 0), (h, w, c))


def cutout(key: jax.Array, x: jax.Array, ratio: float = 0.5) -> jax.Array:
    h, w, _ = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = jax.random.randint(key, (), 0, h + (1 - ch % 2))
    cx = jax.random.randint(jax.random.fold_in(key, 1), (), 0, w + (1 - cw % 2))
    rows = jnp.arange(h)[:, None, None]
    cols = jnp.arange(w)[None, :, None]
    inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)
              & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
    return jnp.where(inside, 0.0, x)


_FUNCS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(key: jax.Array, x: jax.Array, policy: tuple[str, ...]) -> jax.Array:
    for i, name in enumerate(policy):
        x = _FUNCS[name](jax.random.fold_in(key, i), x)
    return x


def augment_batch(keys: jax.Array, x: jax.Array, policy: tuple[str, ...],
                  with_flip: bool = False) -> jax.Array:
    """Per-example flip (optional) then DiffAugment with `policy`, one key per example."""
    if with_flip:
        x = jax.vmap(flip)(jax.vmap(lambda k: jax.random.fold_in(k, 99))(keys), x)
    if policy:
        x = jax.vmap(lambda k, im: diff_augment(k, im, policy))(keys, x)
    return x
