"""Model families as the loop sees them: how to build the driven step, the state's shapes, the
grids to write, and which metrics the progress bar shows."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections

from genart_jax.train import gan, vae


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    build_training: Callable[..., tuple[Any, Callable]]
    abstract_state: Callable[[ml_collections.ConfigDict], Any]
    write_samples: Callable[..., list]
    progress: tuple[str, str]
    batches_per_step: Callable[[ml_collections.ConfigDict], int]


GAN = Family("gan", gan.build_training, gan.abstract_state, gan.write_samples, gan.PROGRESS,
             lambda cfg: cfg.train.d_steps)
VAE = Family("vae", vae.build_training, vae.abstract_state, vae.write_samples, vae.PROGRESS,
             lambda cfg: 1)


def family_of(cfg: ml_collections.ConfigDict) -> Family:
    if cfg.model.family == "gan":
        return GAN
    if cfg.model.family == "vae":
        return VAE
    raise ValueError(f"unknown model.family {cfg.model.family!r}; choose 'gan' or 'vae'")
