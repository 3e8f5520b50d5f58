"""Pixels: host-side conversion to the training size on the 8-bit grid, and the device-side
conversion of uint8 to the model's range inside the compiled step.

Images stay uint8 from the files to the device (a quarter of float32's bytes in caches, on the
wire and in device memory); `to_model_range` maps them to [-1, 1] at the top of each step body.
Anything resized is rounded back to uint8, so every value a model (and the VAE's discretised
likelihood) sees is a bin centre k / 127.5 - 1 of 8-bit data.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as PIL's "L"


def to_model_range(images, dtype=None):
    """uint8 images -> `dtype` (default float32) in [-1, 1], k -> k / 127.5 - 1; an array that
    is not uint8 is taken as already in the model's range and returned unchanged (jnp, jit-able).
    """
    import jax.numpy as jnp

    if images.dtype != jnp.uint8:
        return images
    dtype = jnp.float32 if dtype is None else dtype
    return (images.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)


def to_model_range_np(images: np.ndarray) -> np.ndarray:
    """The host (NumPy) twin of `to_model_range`, float32: for grids, metrics and evaluation."""
    if images.dtype != np.uint8:
        return images
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, H, W, c) -> uint8 (N, H, W, channels): RGBA drops alpha, grey repeats, RGB to
    grey by luma (rounded)."""
    c = images.shape[-1]
    if c == 4:
        images, c = images[..., :3], 3
    if c == channels:
        return images
    if c == 1:
        return np.repeat(images, channels, axis=-1)
    if c == 3 and channels == 1:
        grey = images.astype(np.float32) @ GREY_WEIGHTS[:, None]
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def centre_square(images: np.ndarray) -> np.ndarray:
    """Centre crop (N, H, W, C) to (N, s, s, C), s = min(H, W)."""
    _, h, w, _ = images.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[:, top:top + s, left:left + s]


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of uint8 (N, s, s, C) squares to (N, size, size, C), rounded and clipped
    to uint8 by Pillow (so the result is on the 8-bit grid)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    c = images.shape[-1]

    def one(img):
        pil = Image.fromarray(img[..., 0] if c == 1 else img, mode="L" if c == 1 else "RGB")
        out = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC), np.uint8)
        return out[..., None] if c == 1 else out

    return np.stack([one(img) for img in images])


def to_training_pixels(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, image_size, image_size, channels): channels, centre
    crop, bicubic resize, all on the 8-bit grid. Done once (a cache), never per batch."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    return resize_uint8(centre_square(convert_channels(images, channels)), image_size)
