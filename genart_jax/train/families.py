"""Model families (GAN, VAE; the hierarchical VAE has hooks of its own), each registered once
with its hooks: what the loop builds and shows, the grids it writes, the variables that
sampling and export use, and what `genart sample` and `genart eval` do with it. Code above the
models (the loop, export, quality, the CLI) asks `family_of(cfg)` instead of comparing family
names; an architecture (models.registry) names its family, and its hooks where they differ."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from genart_jax.train import gan, hvae, vae
from genart_jax.train.requests import EvalPlan, EvalRequest, SampleRequest, Written

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family's hooks.

    build and step: `build_training(cfg, devices=None, steps_per_call=1) -> (driver,
    init_fn)` (its step on the configured driver), `abstract_state(cfg)`;
    the loop: `progress` (the two metrics its bar shows), `batches_per_step(cfg)`;
    grid: `write_samples(cfg, host_state, path, real=None, themes=None) -> [paths]`;
    export and sample: `variables(cfg, state, use_ema) -> (params, batch_stats, ema used)`,
    `generate(cfg, params, batch_stats, num=, seed=) -> images`, `sample(cfg, params,
    batch_stats, SampleRequest, out) -> Written`; eval: `plan_eval(cfg, state, EvalRequest)
    -> EvalPlan`; `steers_latents`: its samples come from a generator of prior latents that
    feedback sessions, directions and the studio steer, through
    `latent_generator(cfg, params, batch_stats, temperature=None)` (from `variables`): an
    object with `latent_dim`, `conditional`, `distillable` (feedback's --finetune applies),
    `temperature` (its default, None where the family has none) and `__call__(z (N,
    latent_dim), labels=None, temperature=None) -> images (N, H, W, C) in [-1, 1]`, the same
    image for the same z whatever the batch."""
    name: str
    build_training: Callable[..., tuple[Any, Callable]]
    abstract_state: Callable[[ml_collections.ConfigDict], Any]
    write_samples: Callable[..., list]
    progress: tuple[str, str]
    batches_per_step: Callable[[ml_collections.ConfigDict], int]
    variables: Callable[[ml_collections.ConfigDict, Any, bool], tuple[PyTree, PyTree, bool]]
    generate: Callable[..., np.ndarray]
    sample: Callable[[ml_collections.ConfigDict, PyTree, PyTree, SampleRequest, str | Path],
                     Written]
    plan_eval: Callable[[ml_collections.ConfigDict, Any, EvalRequest], EvalPlan]
    steers_latents: bool = False
    latent_generator: Callable[..., Any] | None = None


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add `family` under its name (once)."""
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is registered already")
    FAMILIES[family.name] = family
    return family


def family_of(cfg: ml_collections.ConfigDict) -> Family:
    """The registered hooks of a config: its architecture's own (`Architecture.hooks`, e.g.
    the hierarchical VAE's), else its `model.family`'s."""
    from genart_jax.models.registry import ARCHITECTURES

    arch = ARCHITECTURES.get((cfg.model.family, cfg.model.arch))
    name = (arch.hooks if arch is not None else "") or cfg.model.family
    if name not in FAMILIES:
        raise ValueError(f"unknown model.family {cfg.model.family!r}; choose one of "
                         f"{tuple(FAMILIES)}")
    return FAMILIES[name]


GAN = register_family(Family(
    "gan", gan.build_training, gan.abstract_state, gan.write_samples, gan.PROGRESS,
    batches_per_step=lambda cfg: cfg.train.d_steps, variables=gan.variables,
    generate=gan.generate, sample=gan.sample, plan_eval=gan.plan_eval, steers_latents=True,
    latent_generator=gan.latent_generator))
VAE = register_family(Family(
    "vae", vae.build_training, vae.abstract_state, vae.write_samples, vae.PROGRESS,
    batches_per_step=lambda cfg: 1, variables=vae.variables, generate=vae.generate,
    sample=vae.sample, plan_eval=vae.plan_eval))
HVAE = register_family(Family(
    "hvae", hvae.build_training, hvae.abstract_state, hvae.write_samples, hvae.PROGRESS,
    batches_per_step=lambda cfg: 1, variables=hvae.variables, generate=hvae.generate,
    sample=hvae.sample, plan_eval=hvae.plan_eval, steers_latents=True,
    latent_generator=hvae.latent_generator))
