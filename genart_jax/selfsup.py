"""A label-free feature space for the quality metrics: the classifier's CNN trained by the
package, offline, on the train split of any dataset with SimCLR's contrastive objective (Chen
et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations": two
augmented views of each image, NT-Xent loss over the batch).

Why SimCLR: it needs no labels, no momentum encoder and no predictor network, trains a small
CNN in minutes on a CPU, and its representation (the layer below the projection head) is the
feature layer the classifier already exposes, so the metrics code is shared. Its views use the
package's own augmentations (`genart_jax.augment`: translation and cutout by default). What an
encoder is trained to ignore the metrics cannot see, so colour, blur and noise are left out of
the views on purpose: a colour-shifted or noisy sample must move in feature space.

The feature space is two blocks, concatenated: per-channel statistics of the first conv
layer's (ReLU) activations, their spatial mean and standard deviation (the texture statistics
of Gatys et al. 2016, "Image Style Transfer Using Convolutional Neural Networks", and Huang &
Belongie 2017, AdaIN) and their total variation (Rudin, Osher & Fatemi 1992), and the SimCLR
feature layer. Measured (benchmarks/results/feature_ranking_2digits): the feature layer alone
ranks dropped modes and colour shifts but puts blurred and noisy digits *below* real-vs-real
(blur sigma 1: 9.64 vs 10.35, noise std 0.2: 9.46; a digit's shape survives blur and noise, and
a shrunken feature spread lowers FID's sampling bias); the first layer's statistics see blur
and noise at every strength but miss dropped modes. Together they rank all four on the digits,
monotone in strength, and order the package's models as the labelled classifier does; on a
folder of hard-edged shapes all but a half-pixel blur (sigma 0.5, within FID's sampling noise
there; docs/quality_metrics.md). Each block is scaled to unit mean per-dimension variance on
the train split (the scales are saved with the params and are part of the fingerprint), so
neither outweighs the other by its units.

Saved like the classifier (Orbax params + `features.json`) in `runs/features_DATA_SIZE`, where
`genart eval` finds it.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genart_jax import augment
from genart_jax.classifier import (
    CNN,
    Classifier,
    ClassifierError,
    _batched,
    fingerprint,
    restore_cnn,
    save_classifier,
)
from genart_jax.small_train import fit, gradient_update, shuffled_batches

FORMAT = "genart_jax.features.v2"
META_FILE = "features.json"
DEFAULT_POLICY = ("translation", "cutout")
BLOCKS = ("conv0_stats", "feature")
SCALE_IMAGES = 2000  # train images the block scales are measured on


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
    """SimCLR's NT-Xent loss of two (B, D) batches of projections, row i of z1 and of z2 being
    the two views of image i: the mean over the 2B anchors of the cross-entropy of picking the
    other view among the 2B - 1 other rows, by cosine similarity / temperature."""
    z = jnp.concatenate([z1, z2]).astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    n = z1.shape[0]
    sim = (z @ z.T) / temperature
    sim = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, sim)
    positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    return optax.softmax_cross_entropy_with_integer_labels(sim, positive).mean()


def two_views(key: jax.Array, x: jax.Array, policy: tuple[str, ...]) -> tuple[jax.Array,
                                                                               jax.Array]:
    """Two independently augmented copies of the batch x (B, H, W, C)."""
    k1, k2 = jax.random.split(key)
    n = x.shape[0]
    return (augment.augment_batch(jax.random.split(k1, n), x, policy),
            augment.augment_batch(jax.random.split(k2, n), x, policy))


def _simclr_step(module: CNN, tx: optax.GradientTransformation, policy: tuple[str, ...],
                 temperature: float):
    """((params, opt_state), (images, key)) -> (state, NT-Xent loss): `fit`'s step."""
    @jax.jit
    def step(state, batch):
        x, key = batch
        v1, v2 = two_views(key, x, policy)

        def loss_fn(p):
            z = module.apply({"params": p}, jnp.concatenate([v1, v2]))
            return nt_xent(z[:len(x)], z[len(x):], temperature)

        params, opt_state, loss = gradient_update(loss_fn, tx, *state)
        return (params, opt_state), loss
    return step


def texture_stats(a: jax.Array) -> jax.Array:
    """Per-channel spatial mean, standard deviation and total variation (mean absolute
    difference of vertically plus horizontally adjacent values) (N, 3C) of activations
    (N, H, W, C): level, contrast, and high-frequency energy, which blur lowers and noise
    raises."""
    tv = (jnp.abs(a[:, 1:] - a[:, :-1]).mean((1, 2))
          + jnp.abs(a[:, :, 1:] - a[:, :, :-1]).mean((1, 2)))
    return jnp.concatenate([a.mean((1, 2)), a.std((1, 2)), tv], axis=-1)


def feature_blocks(module: CNN, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The unscaled blocks of the metric feature space for images x: the first conv layer's
    texture statistics (N, 3 * width) and the SimCLR feature layer (N, feature_dim). Called
    as a method of a bound `module` (`module.apply(..., method=feature_blocks)`)."""
    return texture_stats(nn.relu(module.convs[0](x))), module.features(x)


def block_scales(module: CNN, params: Any, images: np.ndarray) -> list[float]:
    """1 / sqrt(mean per-dimension variance) of each block over `images`: the factors that
    put both blocks on unit scale."""
    fn = jax.jit(lambda p, x: jnp.concatenate(
        module.apply({"params": p}, x, method=feature_blocks), axis=-1))
    f = _batched(functools.partial(fn, params), np.asarray(images, np.float32)).astype(np.float64)
    split = 3 * module.width
    return [float(1 / np.sqrt(max(b.var(0).mean(), 1e-12))) for b in (f[:, :split],
                                                                        f[:, split:])]


class Encoder(Classifier):
    """A trained SimCLR encoder: `.features(images)` (N, 3 * width + feature_dim), the scaled
    first-layer texture statistics and feature layer, for images (N, S, S, C) in [-1, 1]; no
    classes."""

    def __init__(self, module: CNN, params: Any, meta: dict[str, Any]):
        super().__init__(module, params, meta)
        self.name = f"{meta['dataset']} SimCLR encoder"
        scales = jnp.asarray([meta["block_scales"][b] for b in BLOCKS], jnp.float32)
        self.fingerprint = fingerprint({"params": params, "block_scales": np.asarray(scales)})

        def metric_features(p, x):
            tex, feat = module.apply({"params": p}, x, method=feature_blocks)
            return jnp.concatenate([tex * scales[0], feat * scales[1]], axis=-1)
        self._metric_features = jax.jit(metric_features)

    def features(self, images: np.ndarray) -> np.ndarray:
        """The metric features (N, 3 * width + feature_dim)."""
        return _batched(functools.partial(self._metric_features, self.params),
                        self._check(images))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        raise ClassifierError(f"the {self.name} is self-supervised: it has no classes")


def train_features(data_cfg: Any, out_dir: str | Path, *, steps: int = 1000,
                   batch_size: int = 128, seed: int = 0, width: int = 16,
                   feature_dim: int = 128, projection_dim: int = 64,
                   temperature: float = 0.5, learning_rate: float = 1e-3,
                   policy: tuple[str, ...] = DEFAULT_POLICY, progress: bool = True
                   ) -> dict[str, Any]:
    """Train a SimCLR encoder on the images of `data_cfg.split` (labels unused) and save params
    (Orbax) and `features.json` into `out_dir`. Returns the saved meta."""
    from genart_jax.data import read_split

    if steps <= 0 or batch_size < 2:
        raise ClassifierError(f"steps must be positive and the batch at least 2, got {steps}, "
                              f"{batch_size}")
    if temperature <= 0:
        raise ClassifierError(f"temperature must be positive, got {temperature}")
    bad = [p for p in policy if p not in augment.POLICIES]
    if bad:
        raise ClassifierError(f"unknown augmentation {bad}; choose from {augment.POLICIES}")
    t0 = time.perf_counter()
    x_train, _ = read_split(data_cfg, data_cfg.split)
    if len(x_train) < batch_size:
        raise ClassifierError(f"split '{data_cfg.split}' of {data_cfg.name} has "
                              f"{len(x_train)} images, fewer than --batch-size {batch_size}")
    module = CNN(num_classes=projection_dim, image_size=data_cfg.image_size, width=width,
                 feature_dim=feature_dim)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *x_train.shape[1:])))["params"]
    tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=1e-4)
    rng, key = np.random.default_rng(seed), jax.random.PRNGKey(seed + 1)
    batches = ((jnp.asarray(x_train[idx]), jax.random.fold_in(key, i))
               for i, idx in enumerate(shuffled_batches(rng, len(x_train), batch_size)))
    (params, _), losses = fit(_simclr_step(module, tx, tuple(policy), temperature),
                              (params, tx.init(params)), batches, steps, progress=progress,
                              desc="features")
    first, last = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
    if not np.isfinite(last):
        raise ClassifierError(f"SimCLR training diverged (loss {last}); lower --lr")
    scales = block_scales(module, params, x_train[:SCALE_IMAGES])
    meta = {"format": FORMAT, "method": "SimCLR (NT-Xent)", "dataset": data_cfg.name,
            "train_split": data_cfg.split, "image_size": int(data_cfg.image_size),
            "channels": int(data_cfg.channels), "num_classes": projection_dim,
            "width": width, "feature_dim": feature_dim, "projection_dim": projection_dim,
            "metric_blocks": list(BLOCKS), "metric_dim": 3 * width + feature_dim,
            "block_scales": dict(zip(BLOCKS, scales, strict=True)),
            "temperature": temperature, "policy": list(policy), "steps": steps,
            "batch_size": batch_size, "seed": seed, "learning_rate": learning_rate,
            "train_examples": int(len(x_train)), "loss_first_20": first,
            "loss_last_20": last, "loss_chance": float(np.log(2 * batch_size - 1)),
            "seconds": round(time.perf_counter() - t0, 1)}
    save_classifier(out_dir, params, meta, META_FILE)
    return meta


def default_dir(data: str, image_size: int) -> Path:
    """Where `genart train-features` saves, and `genart eval` looks, by default."""
    return Path("runs") / f"features_{data}_{image_size}"


def train_command(data: str, image_size: int, channels: int) -> str:
    """The command that trains the default encoder for a dataset at a size."""
    return (f"genart train-features --data {data} --image-size {image_size} --channels "
            f"{channels}")


def load_encoder(path: str | Path) -> Encoder:
    """The encoder saved by `train_features` in folder `path`."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise ClassifierError(f"no self-supervised encoder in {path} (no {META_FILE}); train "
                              f"one with `genart train-features --data NAME --image-size S`")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ClassifierError(f"{meta_file} is not valid JSON: {e}") from e
    if meta.get("format") == "genart_jax.features.v1":
        how = train_command(meta["dataset"], meta["image_size"], meta["channels"])
        raise ClassifierError(f"the encoder in {path} is of the older format v1 (feature "
                              f"layer only); train it again with `{how}`")
    if meta.get("format") != FORMAT:
        raise ClassifierError(f"{meta_file} is not a {FORMAT} file")
    return Encoder(*restore_cnn(path, meta), meta)


def matching_encoder(data_cfg: Any, path: str | Path | None = None) -> Encoder:
    """The encoder in `path` (default: `default_dir`), checked to take `data_cfg`'s images."""
    how = train_command(data_cfg.name, data_cfg.image_size, data_cfg.channels)
    path = Path(path) if path else default_dir(data_cfg.name, data_cfg.image_size)
    if not (path / META_FILE).is_file():
        raise ClassifierError(f"no self-supervised encoder in {path}; train one with `{how}`")
    enc = load_encoder(path)
    want = (data_cfg.name, data_cfg.image_size, data_cfg.channels)
    have = (enc.meta["dataset"], enc.meta["image_size"], enc.meta["channels"])
    if want != have:
        raise ClassifierError(f"the encoder in {path} was trained on {have[0]} at "
                              f"{have[1]}x{have[1]}x{have[2]}, but these images are {want[0]} "
                              f"at {want[1]}x{want[1]}x{want[2]}; train a matching one with "
                              f"`{how}`")
    return enc
