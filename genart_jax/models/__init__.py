"""Flax Linen modules: pure functions of (params, inputs). `build_gan` maps a config to them."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from genart_jax.models.dcgan import DCGANDiscriminator, DCGANGenerator, UpConv, num_stages
from genart_jax.models.mlp_gan import MLPDiscriminator, MLPGenerator
from genart_jax.models.r3gan import R3GANDiscriminator, R3GANGenerator
from genart_jax.models.vae import VAE

__all__ = [
    "DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator", "UpConv",
    "R3GANDiscriminator", "R3GANGenerator",
    "VAE", "build_gan", "build_vae", "compute_dtype", "num_stages",
]


def compute_dtype(name: str) -> jnp.dtype:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build_gan(model: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
              axis_name: str | None = None, bn_momentum: float = 0.9
              ) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for `model.arch` at the data's image size and channels.

    `axis_name` names the data-parallel axis over which BatchNorm averages its statistics in
    training; None outside a mapped context (sampling). `bn_momentum=0` makes a generator whose
    running statistics become those of the last batch it saw (used to recalibrate for sampling).
    `model.num_classes > 0` makes both class-conditional (labels in; projection discriminator).
    """
    dtype = compute_dtype(model.dtype)
    if model.arch == "dcgan":
        num_stages(data.image_size)  # validates the size with a clear message
        g = DCGANGenerator(image_size=data.image_size, channels=data.channels,
                           width=model.g_width, dtype=dtype, axis_name=axis_name,
                           bn_momentum=bn_momentum, num_classes=model.num_classes,
                           conv_forms=model.conv_forms)
        d = DCGANDiscriminator(width=model.d_width, dtype=dtype, axis_name=axis_name,
                               bn_momentum=bn_momentum, num_classes=model.num_classes,
                               conv_forms=model.conv_forms)
        return g, d
    if model.arch == "mlp":
        shape = (data.image_size, data.image_size, data.channels)
        g = MLPGenerator(out_shape=shape, hidden=tuple(model.mlp_g_hidden),
                         leak=model.mlp_leak, dtype=dtype, num_classes=model.num_classes)
        d = MLPDiscriminator(hidden=tuple(model.mlp_d_hidden), leak=model.mlp_leak, dtype=dtype,
                             num_classes=model.num_classes)
        return g, d
    if model.arch == "r3gan":
        shared = dict(widths=tuple(model.r3gan_widths), blocks=tuple(model.r3gan_blocks),
                      expansion=model.r3gan_expansion, group_size=model.r3gan_group_size,
                      num_classes=model.num_classes, embed_dim=model.r3gan_embed_dim,
                      dtype=dtype)
        g = R3GANGenerator(image_size=data.image_size, channels=data.channels, **shared)
        return g, R3GANDiscriminator(**shared)
    raise ValueError(f"unknown model.arch {model.arch!r}; choose 'dcgan', 'mlp' or 'r3gan'")


def build_vae(cfg: ml_collections.ConfigDict) -> VAE:
    """The VAE of a config (model, data and vae sections): a learned per-pixel scale only for
    a Gaussian likelihood with vae.scale == "learned"."""
    return VAE(arch=cfg.model.arch,
               image_shape=(cfg.data.image_size, cfg.data.image_size, cfg.data.channels),
               latent_dim=cfg.model.latent_dim, hidden=tuple(cfg.model.vae_hidden),
               width=cfg.model.vae_width, num_classes=cfg.model.num_classes,
               learned_scale=cfg.vae.likelihood == "gaussian" and cfg.vae.scale == "learned",
               dtype=compute_dtype(cfg.model.dtype), conv_forms=cfg.model.conv_forms)
