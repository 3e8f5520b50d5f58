"""DCGAN generator and discriminator (Radford et al. 2016) for square images of 4 * 2^k pixels.

The generator's k4/s2 transposed convolutions (`UpConv`, PyTorch's `ConvTranspose2d(k=4, s=2,
p=1)`) and the discriminator's k4/s2 convolutions (`DownConv`) are
`genart_jax.models.resample_conv`'s layers. `conv_forms` (the config's `model.conv_forms`) picks
their passes: "auto", each forward and backward pass picked per backend for speed (the CPU
forms on XLA:CPU, XLA's convolutions elsewhere); "xla", XLA's convolutions everywhere (for
counting the model's FLOPs). Both give the same values and derivatives of any order, R1/R2's
second derivatives included.

With `num_classes > 0` both are class-conditional (see `genart_jax.models.conditioning`): the
generator's BatchNorms become conditional (a scale and shift per class), and the discriminator
is a projection discriminator. With `num_classes == 0` the parameter trees and numbers are those
of the plain DCGAN.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from genart_jax.models.conditioning import ConditionalBatchNorm, check_labels, projection
from genart_jax.models.registry import Architecture, compute_dtype, register_architecture
from genart_jax.models.resample_conv import downsample_conv, upsample_conv

Dtype = Any
dcgan_init = nn.initializers.normal(0.02)


def num_stages(image_size: int) -> int:
    """Number of 2x resolution changes between 4x4 and `image_size` (which must be 4 * 2^k)."""
    k = math.log2(image_size / 4) if image_size >= 8 else -1
    if k < 1 or k != int(k):
        raise ValueError(
            f"DCGAN needs a square image size of 4 * 2^k pixels with k >= 1 (8, 16, 32, 64, "
            f"128, ...), got {image_size}; set data.image_size accordingly"
        )
    return int(k)


class UpConv(nn.Module):
    """2x upsampling convolution: kernel 4, stride 2, padding 1 (see `upsample_conv`).

    `kernel` has shape (4, 4, in, out) with PyTorch's scatter semantics:
    out[2i + k - 1] += x[i] * w[k].
    """

    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Any = dcgan_init
    conv_forms: str = "auto"  # "auto" | "xla": see `resample_conv.FORMS`

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        w = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features), jnp.float32)
        return _add_bias(self, upsample_conv(x.astype(self.dtype), w.astype(self.dtype),
                                             self.conv_forms))


def _add_bias(module: nn.Module, y: jnp.ndarray) -> jnp.ndarray:
    """y + the module's per-channel "bias" parameter (zeros at init) when `use_bias`."""
    if not module.use_bias:
        return y
    bias = module.param("bias", nn.initializers.zeros, (module.features,))
    return y + bias.astype(module.dtype).reshape(1, 1, 1, -1)


def _batch_norm(train: bool, momentum: float, axis_name: str | None, dtype: Dtype) -> nn.Module:
    # PyTorch's BatchNorm2d defaults: eps 1e-5, running-average weight 0.1 (flax momentum 0.9).
    # In training, statistics are averaged over `axis_name` (the data-parallel axis), so the
    # normalisation sees the whole global batch whatever the device count.
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                        axis_name=axis_name if train else None, dtype=dtype)


class DCGANGenerator(nn.Module):
    """z (N, latent) [, labels (N,)] -> image (N, S, S, C) in [-1, 1].

    Conditional (`num_classes > 0`): every BatchNorm is a `ConditionalBatchNorm` (class-specific
    scale and shift). A label embedding concatenated to z was tried first and made the
    generator ignore z (one image per class); see `genart_jax.models.conditioning`.
    """

    image_size: int = 32
    channels: int = 3
    width: int = 64
    dtype: Dtype = jnp.float32
    axis_name: str | None = None
    bn_momentum: float = 0.9
    num_classes: int = 0
    conv_forms: str = "auto"  # "auto" | "xla": see `resample_conv.FORMS`

    @nn.compact
    def __call__(self, z: jnp.ndarray, labels: jnp.ndarray | None = None, train: bool = True
                 ) -> jnp.ndarray:
        check_labels(labels, self.num_classes, "generator")
        stages = num_stages(self.image_size)
        n = z.shape[0]

        def norm(x):
            if self.num_classes > 0:
                return ConditionalBatchNorm(self.num_classes, train, self.bn_momentum,
                                            self.axis_name, self.dtype)(x, labels)
            return _batch_norm(train, self.bn_momentum, self.axis_name, self.dtype)(x)

        c = self.width * 2 ** (stages - 1)
        x = nn.Dense(4 * 4 * c, use_bias=False, kernel_init=dcgan_init, dtype=self.dtype)(z)
        x = x.reshape(n, 4, 4, c)
        x = nn.relu(norm(x))
        for _ in range(stages - 1):
            c //= 2
            x = UpConv(c, dtype=self.dtype, conv_forms=self.conv_forms)(x)
            x = nn.relu(norm(x))
        x = UpConv(self.channels, dtype=self.dtype, conv_forms=self.conv_forms)(x)
        return jnp.tanh(x.astype(jnp.float32))


class DownConv(nn.Module):
    """Convolution kernel 4, stride 2, padding 1 (see `downsample_conv`). With `use_bias` its
    parameters are those of `nn.Conv(features, (4, 4), strides=2, padding=1)`."""

    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Any = dcgan_init
    conv_forms: str = "auto"  # "auto" | "xla": see `resample_conv.FORMS`

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        w = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features), jnp.float32)
        return _add_bias(self, downsample_conv(x.astype(self.dtype), w.astype(self.dtype),
                                               self.conv_forms))


class DCGANDiscriminator(nn.Module):
    """image (N, S, S, C) [, labels (N,)] -> logits (N,) of the probability that the image is
    real (and, when conditional, of its class).

    Conditional (`num_classes > 0`): a projection discriminator, logit = linear(phi(x)) +
    <embed(y), phi(x)>, with phi(x) the flattened final 4x4 feature map (the input of the last
    layer, so the projection is a class-specific 4x4 valid convolution).
    """

    width: int = 64
    dtype: Dtype = jnp.float32
    axis_name: str | None = None
    bn_momentum: float = 0.9
    num_classes: int = 0
    conv_forms: str = "auto"  # "auto" | "xla": see `resample_conv.FORMS`

    @nn.compact
    def __call__(self, x: jnp.ndarray, labels: jnp.ndarray | None = None, train: bool = True
                 ) -> jnp.ndarray:
        check_labels(labels, self.num_classes, "discriminator")
        stages = num_stages(x.shape[1])
        x = x.astype(self.dtype)
        c = self.width
        for i in range(stages):
            x = DownConv(c, dtype=self.dtype, conv_forms=self.conv_forms, name=f"Conv_{i}")(x)
            if i > 0:
                x = _batch_norm(train, self.bn_momentum, self.axis_name, self.dtype)(x)
            x = nn.leaky_relu(x, 0.2)
            c *= 2
        # The final 4x4 valid convolution to one channel is a dense layer on the flattened map.
        x = x.reshape(x.shape[0], -1)
        logits = nn.Dense(1, use_bias=False, kernel_init=dcgan_init, dtype=self.dtype)(x)
        # float32 logits from bfloat16 (and float32); float64 (the tests' derivative checks)
        # stays float64: rounded to float32, finite differences of R1 were noise.
        logits = logits[:, 0].astype(jnp.promote_types(self.dtype, jnp.float32))
        if self.num_classes > 0:
            logits = logits + projection(x, labels, self.num_classes, self.dtype)
        return logits


def build(settings: ml_collections.ConfigDict, model: ml_collections.ConfigDict,
          data: ml_collections.ConfigDict, *, axis_name: str | None, bn_momentum: float
          ) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """(generator, discriminator) of `model.dcgan` at the data's image size and channels."""
    dtype = compute_dtype(model.dtype)
    num_stages(data.image_size)  # validates the size with a clear message
    g = DCGANGenerator(image_size=data.image_size, channels=data.channels,
                       width=settings.g_width, dtype=dtype, axis_name=axis_name,
                       bn_momentum=bn_momentum, num_classes=model.num_classes,
                       conv_forms=model.conv_forms)
    d = DCGANDiscriminator(width=settings.d_width, dtype=dtype, axis_name=axis_name,
                           bn_momentum=bn_momentum, num_classes=model.num_classes,
                           conv_forms=model.conv_forms)
    return g, d


def check(settings: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict) -> None:
    """Its resolution doubles from 4x4: a size it cannot make is a data.image_size error."""
    del settings
    try:
        num_stages(cfg.data.image_size)
    except ValueError as e:
        raise ValueError(f"config key 'data.image_size': {e}") from e


register_architecture(Architecture(
    "dcgan", family="gan", section="dcgan", build=build, check=check, convolutional=True,
    defaults={"g_width": 64,  # ngf: channels of the last hidden generator layer
              "d_width": 64},  # ndf: channels of the first discriminator layer
    positive=("g_width", "d_width"),
    renamed={"g_width": "g_width", "d_width": "d_width"}))
