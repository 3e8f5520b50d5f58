"""DCGAN generator and discriminator (Radford et al. 2016) for square images of 4 * 2^k pixels.

The generator's k4/s2 transposed convolutions are computed in their four-phase form (`UpConv`):
four 2x2 stride-1 convolutions whose outputs interleave into the 2x upsampled image. It is the
same linear map as a transposed convolution with a 4x4 kernel, stride 2, padding 1 (PyTorch's
`ConvTranspose2d(k=4, s=2, p=1)`), but its weight gradient runs as ordinary convolutions, which
XLA:CPU computes about 5x faster than the transposed form (see DESIGN.md).

With `num_classes > 0` both are class-conditional (see `genart_jax.models.conditioning`): the
generator's BatchNorms become conditional (a scale and shift per class), and the discriminator
is a projection discriminator. With `num_classes == 0` the parameter trees and numbers are those
of the plain DCGAN.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from genart_jax.models.conditioning import ConditionalBatchNorm, check_labels, projection

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


def upsample_conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """The k4/s2/p1 transposed convolution out[2i + k - 1] += x[i] * w[k] (w: (4, 4, in, out))
    as four 2x2 stride-1 convolutions interleaved: output pixel (2m + a, 2n + b) correlates the
    input at rows (m - 1 + a, m + a), columns (n - 1 + b, n + b) with taps w[3-a::-2, 3-b::-2]."""
    rows = []
    for a in (0, 1):
        cols = []
        for b in (0, 1):
            cols.append(lax.conv_general_dilated(
                x, w[3 - a::-2, 3 - b::-2], window_strides=(1, 1),
                padding=((1 - a, a), (1 - b, b)),
                dimension_numbers=("NHWC", "HWIO", "NHWC")))
        rows.append(jnp.stack(cols, axis=3))  # (N, H, W, 2[b], C)
    y = jnp.stack(rows, axis=2)  # (N, H, 2[a], W, 2[b], C)
    n, h, _, wd, _, c = y.shape
    return y.reshape(n, 2 * h, 2 * wd, c)


def _conv_s2(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    return lax.conv_general_dilated(x, w, window_strides=(2, 2), padding=((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def downsample_conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """Convolution with kernel 4, stride 2, padding 1 (w: (4, 4, in, out)). Same values and
    gradients as `lax.conv_general_dilated`, but the input gradient, a k4/s2 transposed
    convolution, runs in four-phase form (`upsample_conv`), which XLA:CPU computes about 3x
    faster than its dilated-input convolution."""
    return _conv_s2(x, w)


def _down_fwd(x, w):
    return _conv_s2(x, w), (x, w)


def _down_bwd(res, ct):
    x, w = res
    dx = upsample_conv(ct, jnp.swapaxes(w, 2, 3))
    (dw,) = jax.vjp(lambda w_: _conv_s2(x, w_), w)[1](ct)
    return dx.astype(x.dtype), dw


downsample_conv.defvjp(_down_fwd, _down_bwd)


class UpConv(nn.Module):
    """2x upsampling convolution: kernel 4, stride 2, padding 1, in four-phase form.

    Output pixel (2m + a, 2n + b) is a 2x2 correlation of the input at rows (m - 1 + a, m + a)
    and columns (n - 1 + b, n + b) with the kernel taps w[3 - a :: -2, 3 - b :: -2].
    `kernel` has shape (4, 4, in, out) with PyTorch's scatter semantics:
    out[2i + k - 1] += x[i] * w[k].
    """

    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Any = dcgan_init

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        w = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features), jnp.float32)
        y = upsample_conv(x.astype(self.dtype), w.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            y = y + bias.astype(self.dtype).reshape(1, 1, 1, -1)
        return y


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
            x = UpConv(c, dtype=self.dtype)(x)
            x = nn.relu(norm(x))
        x = UpConv(self.channels, dtype=self.dtype)(x)
        return jnp.tanh(x.astype(jnp.float32))


class DownConv(nn.Module):
    """Convolution kernel 4, stride 2, padding 1, no bias (see `downsample_conv`)."""

    features: int
    dtype: Dtype = jnp.float32
    kernel_init: Any = dcgan_init

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        w = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features), jnp.float32)
        return downsample_conv(x.astype(self.dtype), w.astype(self.dtype))


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

    @nn.compact
    def __call__(self, x: jnp.ndarray, labels: jnp.ndarray | None = None, train: bool = True
                 ) -> jnp.ndarray:
        check_labels(labels, self.num_classes, "discriminator")
        stages = num_stages(x.shape[1])
        x = x.astype(self.dtype)
        c = self.width
        for i in range(stages):
            x = DownConv(c, dtype=self.dtype, name=f"Conv_{i}")(x)
            if i > 0:
                x = _batch_norm(train, self.bn_momentum, self.axis_name, self.dtype)(x)
            x = nn.leaky_relu(x, 0.2)
            c *= 2
        # The final 4x4 valid convolution to one channel is a dense layer on the flattened map.
        x = x.reshape(x.shape[0], -1)
        logits = nn.Dense(1, use_bias=False, kernel_init=dcgan_init, dtype=self.dtype)(x)
        logits = logits[:, 0].astype(jnp.float32)
        if self.num_classes > 0:
            logits = logits + projection(x, labels, self.num_classes, self.dtype)
        return logits
