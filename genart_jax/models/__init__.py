"""Flax Linen modules: pure functions of (params, inputs). Each architecture's module registers
it in `registry` (every module here is imported below); `build_gan` and `build_vae` map a
config to its modules."""

from __future__ import annotations

import importlib
import pkgutil

import flax.linen as nn
import ml_collections

from genart_jax.models.dcgan import DCGANDiscriminator, DCGANGenerator, UpConv, num_stages
from genart_jax.models.mlp_gan import MLPDiscriminator, MLPGenerator
from genart_jax.models.r3gan import R3GANDiscriminator, R3GANGenerator
from genart_jax.models.registry import architecture, compute_dtype

for _module in pkgutil.iter_modules(__path__):  # a new architecture's module registers itself
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator", "UpConv",
    "R3GANDiscriminator", "R3GANGenerator",
    "build_gan", "build_vae", "compute_dtype", "num_stages",
]


def build_gan(model: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
              axis_name: str | None = None, bn_momentum: float = 0.9
              ) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for `model.arch` at the data's image size and channels.

    `axis_name` names the data-parallel axis over which BatchNorm averages its statistics in
    training; None outside a mapped context (sampling). `bn_momentum=0` makes a generator whose
    running statistics become those of the last batch it saw (used to recalibrate for sampling).
    `model.num_classes > 0` makes both class-conditional (labels in; projection discriminator).
    """
    arch = architecture("gan", model.arch)
    return arch.build(arch.settings(model), model, data, axis_name=axis_name,
                      bn_momentum=bn_momentum)


def build_vae(cfg: ml_collections.ConfigDict) -> nn.Module:
    """The VAE of a config (model, data and vae sections): `encode(x, y) -> (mu, logvar)` and
    `decode(z, y)` -> per-pixel likelihood parameters."""
    arch = architecture("vae", cfg.model.arch)
    return arch.build(arch.settings(cfg.model), cfg)
