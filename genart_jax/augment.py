"""Augmentation on device, per example, differentiable: random horizontal flip (for real images)
and DiffAugment (Zhao et al. 2020: colour, translation, cutout), which a GAN applies to real and
generated images alike before the discriminator so that D cannot overfit a small dataset while
G still gets gradients through the augmentation. Images are (H, W, C) in [-1, 1]; each function
takes one example and its own key (vmapped over the batch by `flip_batch`, `augment_batch`).

Adaptive augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data"): `ada_augment` applies each of ADA's pixel-blitting ops (x-flip, 90-degree
rotation, integer translation) and DiffAugment's colour op, each on its own with probability p
per example, before every D pass; `ada_adjust` steers p from r_t = E[sign(D(real))] toward a
target. Since every op is skipped with probability 1 - p > 0, the augmented distribution
determines the clean one (ADA's non-leaking condition) as long as p < 1; `p_max` (0.8 by default)
keeps p clear of where ADA saw leaks begin. Departures from ADA: its general geometric
(scaling, arbitrary rotation, fractional translation) and filtering groups are not here, the
integer translation pads by reflection as ADA does but on the pixel grid directly, and p is
adjusted every iteration from that iteration's r_t instead of every 4 from their mean."""

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


def flip_batch(keys: jax.Array, x: jax.Array) -> jax.Array:
    """Per-example horizontal flip with probability 1/2, one key per example."""
    return jax.vmap(flip)(keys, x)


def augment_batch(keys: jax.Array, x: jax.Array, policy: tuple[str, ...]) -> jax.Array:
    """DiffAugment with `policy`, one key per example."""
    if policy:
        x = jax.vmap(lambda k, im: diff_augment(k, im, policy))(keys, x)
    return x


ADA_OPS = ("xflip", "rot90", "translate", "color")


def _maybe(key: jax.Array, p: jax.Array, op, x: jax.Array) -> jax.Array:
    """op(x) with probability p, else x (the op gets its own key)."""
    k_apply, k_op = jax.random.split(key)
    return jnp.where(jax.random.uniform(k_apply) < p, op(k_op, x), x)


def rot90(key: jax.Array, x: jax.Array) -> jax.Array:
    """x rotated by k * 90 degrees, k uniform in {0, 1, 2, 3} (square images)."""
    k = jax.random.randint(key, (), 0, 4)
    return lax.switch(k, [lambda im, i=i: jnp.rot90(im, i, axes=(0, 1)) for i in range(4)], x)


def reflect_shift_matrix(n: int, shift: jax.Array, dtype=jnp.float32) -> jax.Array:
    """The (n, n) 0/1 matrix M with (M @ v)[i] = v[reflect(i - shift)], reflecting about the
    end samples (NumPy's 'reflect' padding; |shift| < n)."""
    src = jnp.abs(jnp.arange(n) - shift)
    src = jnp.where(src > n - 1, 2 * (n - 1) - src, src)
    return (src[:, None] == jnp.arange(n)[None, :]).astype(dtype)


def translate_by(x: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
    """x (H, W, C) shifted down by dy and right by dx whole pixels, reflection-padded: two
    products with 0/1 matrices (exact at HIGHEST precision, linear, so R1's derivatives through
    it are matrix products too: the tiny test model's step compiled in 7.9 CPU-s against 11.1
    with the pad-and-dynamic-slice form)."""
    h, w, _ = x.shape
    hi = lax.Precision.HIGHEST
    x = jnp.einsum("ij,jwc->iwc", reflect_shift_matrix(h, dy, x.dtype), x, precision=hi)
    return jnp.einsum("vw,iwc->ivc", reflect_shift_matrix(w, dx, x.dtype), x, precision=hi)


def integer_translation(key: jax.Array, x: jax.Array, ratio: float = 0.125) -> jax.Array:
    """x shifted by whole pixels, up to `ratio` of its size per axis, reflection-padded (ADA's
    'xint')."""
    h, w, _ = x.shape
    sh, sw = max(1, round(h * ratio)), max(1, round(w * ratio))
    dy = jax.random.randint(key, (), -sh, sh + 1)
    dx = jax.random.randint(jax.random.fold_in(key, 1), (), -sw, sw + 1)
    return translate_by(x, dy, dx)


_ADA_FUNCS = {"xflip": flip, "rot90": rot90, "translate": integer_translation, "color": color}


def ada_augment(key: jax.Array, x: jax.Array, p: jax.Array) -> jax.Array:
    """One example through every ADA op, each applied on its own with probability p."""
    for i, name in enumerate(ADA_OPS):
        x = _maybe(jax.random.fold_in(key, i), p, _ADA_FUNCS[name], x)
    return x


def ada_batch(keys: jax.Array, x: jax.Array, p: jax.Array) -> jax.Array:
    """`ada_augment` per example, one key per example, the same p for all."""
    return jax.vmap(lambda k, im: ada_augment(k, im, p))(keys, x)


def overfitting_signal(real_logits: jax.Array, fake_logits: jax.Array | None = None
                       ) -> jax.Array:
    """ADA's r_t = E[sign(D(x_real))]: 0 when D cannot tell, 1 when it is sure of every real.
    With `fake_logits` (the relativistic loss, whose logits are only defined up to a shift):
    E[sign(D(x_real) - D(x_fake))] over the pairs instead."""
    x = real_logits.astype(jnp.float32)
    if fake_logits is not None:
        x = x - fake_logits.astype(jnp.float32)
    return jnp.mean(jnp.sign(x))


def ada_adjust(p: jax.Array, r_t: jax.Array, *, target: float, images: int, kimg: float,
               p_max: float) -> jax.Array:
    """p + sign(r_t - target) * images / (kimg * 1000), clipped to [0, p_max]: up when D
    overfits (r_t above the target), down when not, by 1 per `kimg` thousand images."""
    step = jnp.sign(r_t - target) * (images / (kimg * 1000.0))
    return jnp.clip(p + step, 0.0, p_max).astype(jnp.float32)
