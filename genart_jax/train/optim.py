"""Optimizers from config: a small explicit factory (no string-to-class lookup tables)."""

from __future__ import annotations

import ml_collections
import optax


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    if cfg.name == "adam":
        return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.name == "rmsprop":
        return optax.rmsprop(cfg.learning_rate, decay=cfg.decay, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose 'adam' or 'rmsprop'")
