"""Latents -> PNG images for the page: generation batched in power-of-two buckets (so a new
count does not compile a new program) and each image encoded at full resolution."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from genart_jax import sampling
from genart_jax.feedback import CheckpointGenerator, Generator

MIN_BUCKET = 8


def bucket(n: int) -> int:
    """The padded batch size for n samples: the next power of two, at least MIN_BUCKET."""
    return max(MIN_BUCKET, 1 << max(0, n - 1).bit_length())


def generate(gen: Generator, z: np.ndarray, labels: np.ndarray | None = None,
             temperature: float | None = None) -> np.ndarray:
    """Images (N, H, W, C) in [-1, 1] for latents z (N, D), padded to `bucket(N)` for the jitted
    generator (eval-mode BatchNorm, an hvae's fixed noise: a sample does not depend on its
    batch). `temperature` (an hvae's) replaces the session's for these images."""
    z = np.asarray(z, np.float32)
    n, pad = len(z), bucket(len(z)) - len(z)
    zp = np.concatenate([z, np.zeros((pad, z.shape[1]), np.float32)])
    if isinstance(gen, CheckpointGenerator):
        if labels is None:  # the session's own labels: every class in turn
            labels, _ = sampling.theme_labels(n, gen.cfg.model.num_classes)
        lp = None if labels is None else np.concatenate([labels, np.zeros(pad, np.int32)])
        out = gen.latents(zp, lp, temperature=temperature)  # None: the session's
    elif labels is not None or temperature is not None:
        raise ValueError("themes and temperature need the workdir's checkpoint")
    else:
        out = gen(zp)
    return np.asarray(out)[:n]


def to_pil(image: np.ndarray) -> Image.Image:
    """One image (H, W, C) in [-1, 1] as a PIL image at its own resolution."""
    px = np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def data_urls(images: np.ndarray) -> list[str]:
    """Each image as a data:image/png URL, so the page shows and downloads it as it is."""
    return ["data:image/png;base64," + base64.b64encode(png_bytes(im)).decode("ascii")
            for im in images]
