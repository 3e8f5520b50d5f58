"""R3GAN's generator and discriminator (Huang, Gokaslan, Kuleshov, Tompkin, "The GAN is dead; long
live the GAN! A Modern Baseline GAN", NeurIPS 2024; reference code brownvc/R3GAN,
`R3GAN/Networks.py`) for square images of 4 * 2^k pixels, NHWC, Flax Linen, no normalisation.

Followed from the reference code:
- Stages at 4x4, 8x8, ..., S x S; `widths[i]` channels and `blocks[i]` residual blocks at stage i
  (the discriminator walks the same stages in reverse).
- The residual block is an inverted bottleneck: 1x1 conv (c -> c * expansion), bias + leaky ReLU
  0.2, k x k grouped conv, bias + leaky ReLU, 1x1 conv back to c; x + that. No normalisation.
- Fix-up style initialisation: every weight N(0, gain / sqrt(fan_in)); inside a block the gain
  is sqrt(2 / (1 + 0.2^2)) * L^(-1/4) with L = sum(blocks), and the block's last layer is zero,
  so each block starts as the identity.
- Transitions: the generator starts from a learned 4x4 basis scaled per channel by a linear map
  of z; the discriminator ends with a depthwise 4x4 "basis" convolution and a linear map. Up: a
  1x1 conv (when the width changes) then 2x bilinear upsampling; down: 2x bilinear downsampling
  then a 1x1 conv. A 1x1 conv maps the last generator stage to the image (no tanh) and the
  image to the first discriminator stage.
- Class-conditional (`num_classes > 0`) as the reference: G concatenates a learned class
  embedding (a bias-free linear map of the one-hot label) to z; D's last linear map outputs
  `embed_dim` features whose dot product with a class embedding (initial scale 1/sqrt(embed_dim))
  is the logit.

Departures:
- Grouped convolutions are specified by `group_size` (channels per group of the expanded layer)
  instead of the cardinality per stage; cardinality = c * expansion / group_size.
- The bilinear resamplers are the separable [1, 3, 3, 1] filters (the reference's [1, 2, 1]
  convolved with [1, 1]) written as shifted sums with zero padding, half-pixel aligned; the
  reference runs them through upfirdn2d. Their phase at the border may differ by a pixel.
- Every convolution is plain `lax.conv_general_dilated` (through `nn.Conv`), not the package's
  custom-VJP resampling convolutions of `genart_jax.models.resample_conv` (R1/R2 need second
  derivatives through D: XLA's convolution gives them to any order, and so, tested, do those
  custom VJPs).
- On CPU a grouped convolution runs as one dense convolution with the block-diagonal kernel
  (`grouped_conv`): XLA:CPU's kernel gradient of a grouped convolution (a batch-grouped
  convolution) took 9.5 s against 0.44 s for the dense form on the r3gan_digits 32 px layer
  (64 x 32 x 32 x 128, 8 groups), G times the FLOPs but 21x faster. Elsewhere XLA's grouped
  convolution; the parameters are the same either way.
- Compute in `dtype` (bfloat16 for mixed precision), parameters float32, logits float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from genart_jax.models.conditioning import check_labels
from genart_jax.models.registry import Architecture, compute_dtype, register_architecture

Dtype = Any
LEAK = 0.2
ACTIVATION_GAIN = math.sqrt(2.0 / (1.0 + LEAK**2))


def r3gan_stages(image_size: int) -> int:
    """Resolutions 4, 8, ..., image_size: their count, for a size of 4 * 2^k (k >= 1)."""
    k = math.log2(image_size / 4) if image_size >= 8 else -1
    if k < 1 or k != int(k):
        raise ValueError(f"r3gan needs a square image size of 4 * 2^k pixels with k >= 1 (8, 16, "
                         f"32, 64, 128, 256, ...), got {image_size}; set data.image_size")
    return int(k) + 1


def check_schema(widths: Sequence[int], blocks: Sequence[int], expansion: int,
                 group_size: int, image_size: int) -> None:
    """A clear ValueError unless there is one width and one block count per stage and every
    expanded width splits into groups of `group_size`."""
    n = r3gan_stages(image_size)
    if len(widths) != n or len(blocks) != n:
        raise ValueError(f"r3gan at {image_size} px has {n} stages (4x4 .. {image_size}x"
                         f"{image_size}): model.r3gan.widths and model.r3gan.blocks need {n} "
                         f"entries each, got {len(widths)} and {len(blocks)}")
    if min(widths) <= 0 or min(blocks) < 0 or expansion <= 0 or group_size <= 0:
        raise ValueError("r3gan widths, expansion and group size must be positive and block "
                         "counts >= 0")
    bad = [w for w in widths if (w * expansion) % group_size]
    if bad:
        raise ValueError(f"r3gan: width * expansion must be a multiple of model.r3gan.group_size"
                         f"={group_size}; widths {bad} are not")


def msr_init(gain: float) -> nn.initializers.Initializer:
    """N(0, gain^2 / fan_in) with fan_in = kernel height * width * input channels per group
    (the reference's MSRInitializer); gain 0 gives zeros."""
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        fan_in = math.prod(shape[:-1])
        return jax.random.normal(key, shape, dtype) * (gain / math.sqrt(fan_in))
    return init


def block_diagonal(kernel: jax.Array, groups: int) -> jax.Array:
    """The dense (kh, kw, G * cin, cout) kernel of a grouped (kh, kw, cin, cout) kernel: input
    channels of group g meet only output channels g * cout / G .. (g + 1) * cout / G - 1."""
    kh, kw, cin, cout = kernel.shape
    per_group = kernel.reshape(kh, kw, cin, groups, cout // groups)
    eye = jnp.eye(groups, dtype=kernel.dtype)
    return jnp.einsum("hwigj,fg->hwfigj", per_group, eye).reshape(kh, kw, groups * cin, cout)


def grouped_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Any,
                 lhs_dilation: Any = None, rhs_dilation: Any = None,
                 dimension_numbers: Any = None, feature_group_count: int = 1,
                 precision: Any = None) -> jax.Array:
    """`lax.conv_general_dilated` (nn.Conv's call); grouped on CPU as the dense convolution with
    `block_diagonal(rhs)`, whose gradients XLA:CPU runs ~20x faster (module docstring)."""
    def xla(lhs_, rhs_, groups=feature_group_count):
        return jax.lax.conv_general_dilated(
            lhs_, rhs_, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=groups, precision=precision)

    if feature_group_count == 1:
        return xla(lhs, rhs)
    return jax.lax.platform_dependent(
        lhs, rhs, cpu=lambda a, b: xla(a, block_diagonal(b, feature_group_count), 1),
        default=xla)


def conv(features: int, kernel: int, dtype: Dtype, gain: float = 1.0, groups: int = 1,
         name: str | None = None) -> nn.Conv:
    """A bias-free stride-1 'same' convolution with MSR initialisation."""
    return nn.Conv(features, (kernel, kernel), padding="SAME", feature_group_count=groups,
                   use_bias=False, kernel_init=msr_init(gain), dtype=dtype,
                   param_dtype=jnp.float32, conv_general_dilated=grouped_conv, name=name)


class BiasedActivation(nn.Module):
    """x + bias (per channel, zero at init), then leaky ReLU 0.2."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        shape = (1,) * (x.ndim - 1) + (-1,)
        return nn.leaky_relu(x + bias.astype(x.dtype).reshape(shape), LEAK)


class ResidualBlock(nn.Module):
    """x + conv1x1(act(gconv_kxk(act(conv1x1(x))))), the last conv zero-initialised."""

    expansion: int
    group_size: int
    variance_scaling: int  # L = total number of blocks in the network
    kernel: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        wide = c * self.expansion
        gain = ACTIVATION_GAIN * self.variance_scaling ** (-1.0 / 4.0)  # L^(-1/(2*3-2))
        y = conv(wide, 1, self.dtype, gain)(x)
        y = conv(wide, self.kernel, self.dtype, gain, groups=wide // self.group_size)(
            BiasedActivation(self.dtype)(y))
        y = conv(c, 1, self.dtype, 0.0)(BiasedActivation(self.dtype)(y))
        return x + y


def _shift(x: jax.Array, axis: int, by: int) -> jax.Array:
    """x moved by `by` (+1 or -1) along `axis` with a zero entering: out[i] = x[i - by]."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 0) if by > 0 else (0, 1)
    start = 0 if by > 0 else 1
    return jax.lax.slice_in_dim(jnp.pad(x, pad), start, start + n, axis=axis)


def upsample2x(x: jax.Array) -> jax.Array:
    """Bilinear 2x upsampling of (N, H, W, C): per axis, out[2i] = (x[i-1] + 3 x[i]) / 4 and
    out[2i+1] = (3 x[i] + x[i+1]) / 4, zero outside."""
    for axis in (1, 2):
        even = 0.25 * _shift(x, axis, 1) + 0.75 * x
        odd = 0.75 * x + 0.25 * _shift(x, axis, -1)
        x = jnp.stack([even, odd], axis=axis + 1)
        shape = list(even.shape)
        shape[axis] *= 2
        x = x.reshape(shape)
    return x


def downsample2x(x: jax.Array) -> jax.Array:
    """Bilinear 2x downsampling of (N, H, W, C), the adjoint of `upsample2x` / 2 per axis:
    out[i] = (x[2i-1] + 3 x[2i] + 3 x[2i+1] + x[2i+2]) / 8, zero outside."""
    for axis in (1, 2):
        even = jax.lax.slice_in_dim(x, 0, None, 2, axis=axis)
        odd = jax.lax.slice_in_dim(x, 1, None, 2, axis=axis)
        x = 0.375 * (even + odd) + 0.125 * (_shift(odd, axis, 1) + _shift(even, axis, -1))
    return x


class R3GANGenerator(nn.Module):
    """z (N, latent) [, labels (N,)] -> image (N, S, S, C), about [-1, 1] (linear output)."""

    image_size: int = 32
    channels: int = 3
    widths: Sequence[int] = (256, 256, 256, 256)
    blocks: Sequence[int] = (1, 1, 1, 1)
    expansion: int = 2
    group_size: int = 16
    kernel: int = 3
    num_classes: int = 0
    embed_dim: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, train: bool = True
                 ) -> jax.Array:
        del train  # no normalisation: training and sampling are the same function
        check_labels(labels, self.num_classes, "generator")
        check_schema(self.widths, self.blocks, self.expansion, self.group_size, self.image_size)
        if self.num_classes > 0:
            embed = nn.Embed(self.num_classes, self.embed_dim, embedding_init=msr_init(1.0),
                             name="class_embedding")(labels)
            z = jnp.concatenate([z, embed.astype(z.dtype)], axis=-1)
        n, total = z.shape[0], sum(self.blocks)
        basis = self.param("basis", nn.initializers.normal(1.0), (4, 4, self.widths[0]))
        scale = nn.Dense(self.widths[0], use_bias=False, kernel_init=msr_init(1.0),
                         dtype=self.dtype, name="basis_scale")(z.astype(self.dtype))
        x = basis.astype(self.dtype)[None] * scale.reshape(n, 1, 1, -1)
        for i, (w, b) in enumerate(zip(self.widths, self.blocks, strict=True)):
            if i > 0:
                if x.shape[-1] != w:
                    x = conv(w, 1, self.dtype, name=f"up_{i}")(x)
                x = upsample2x(x)
            for j in range(b):
                x = ResidualBlock(self.expansion, self.group_size, total, self.kernel,
                                  self.dtype, name=f"stage{i}_block{j}")(x)
        x = conv(self.channels, 1, self.dtype, name="to_image")(x)
        return x.astype(jnp.float32)


class R3GANDiscriminator(nn.Module):
    """image (N, S, S, C) [, labels (N,)] -> logits (N,) float32."""

    widths: Sequence[int] = (256, 256, 256, 256)  # generator order: 4x4 stage first
    blocks: Sequence[int] = (1, 1, 1, 1)
    expansion: int = 2
    group_size: int = 16
    kernel: int = 3
    num_classes: int = 0
    embed_dim: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = True
                 ) -> jax.Array:
        del train
        check_labels(labels, self.num_classes, "discriminator")
        check_schema(self.widths, self.blocks, self.expansion, self.group_size, x.shape[1])
        widths, blocks, total = self.widths[::-1], self.blocks[::-1], sum(self.blocks)
        x = conv(widths[0], 1, self.dtype, name="from_image")(x.astype(self.dtype))
        last = len(widths) - 1
        for i, (w, b) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(b):
                x = ResidualBlock(self.expansion, self.group_size, total, self.kernel,
                                  self.dtype, name=f"stage{last - i}_block{j}")(x)
            if i < last:
                x = downsample2x(x)
                if widths[i + 1] != w:
                    x = conv(widths[i + 1], 1, self.dtype, name=f"down_{last - i}")(x)
        c = x.shape[-1]
        x = nn.Conv(c, (4, 4), padding="VALID", feature_group_count=c, use_bias=False,
                    kernel_init=msr_init(1.0), dtype=self.dtype,
                    conv_general_dilated=grouped_conv, name="basis")(x)
        out = 1 if self.num_classes == 0 else self.embed_dim
        x = nn.Dense(out, use_bias=False, kernel_init=msr_init(1.0), dtype=self.dtype,
                     name="head")(x.reshape(x.shape[0], c))
        if self.num_classes == 0:
            return x[:, 0].astype(jnp.float32)
        embed = nn.Embed(self.num_classes, self.embed_dim,
                         embedding_init=msr_init(1.0 / math.sqrt(self.embed_dim)),
                         name="class_embedding")(labels)
        return jnp.sum(x.astype(jnp.float32) * embed, axis=-1)


def build(settings: ml_collections.ConfigDict, model: ml_collections.ConfigDict,
          data: ml_collections.ConfigDict, *, axis_name: str | None, bn_momentum: float
          ) -> tuple[R3GANGenerator, R3GANDiscriminator]:
    """(generator, discriminator) of `model.r3gan` at the data's image size and channels (no
    normalisation: `axis_name` and `bn_momentum` do not apply)."""
    del axis_name, bn_momentum
    shared = dict(widths=tuple(settings.widths), blocks=tuple(settings.blocks),
                  expansion=settings.expansion, group_size=settings.group_size,
                  num_classes=model.num_classes, embed_dim=settings.embed_dim,
                  dtype=compute_dtype(model.dtype))
    g = R3GANGenerator(image_size=data.image_size, channels=data.channels, **shared)
    return g, R3GANDiscriminator(**shared)


def check(settings: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict) -> None:
    """One width and block count per stage at data.image_size; groups that divide."""
    check_schema(settings.widths, settings.blocks, settings.expansion, settings.group_size,
                 cfg.data.image_size)


register_architecture(Architecture(
    "r3gan", family="gan", section="r3gan", build=build, check=check, convolutional=True,
    defaults={"widths": (256, 256, 256, 256),  # channels per stage, 4x4 stage first
              "blocks": (1, 1, 1, 1),  # residual blocks per stage
              "expansion": 2,  # inverted-bottleneck expansion of each block
              "group_size": 16,  # channels per group of the grouped convolution
              "embed_dim": 64},  # conditional: class embedding width
    positive=("expansion", "group_size", "embed_dim"),
    renamed={f"r3gan_{k}": k for k in ("widths", "blocks", "expansion", "group_size",
                                        "embed_dim")}))
