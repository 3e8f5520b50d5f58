"""Per-class attribute directions of an unconditional GAN (or of an hvae's top latent group),
found with a classifier.

Draw N latents from the prior (`sampling.latents(seed, ...)`), generate, classify; for each class
k the direction is mean(latents classified k) - mean(latents of the rest)
(`sampling.attribute_direction`). Adding it to any latent (`sampling.apply_direction`, or
`genart sample --direction class_K.npy --strength S`) pushes the sample toward class k. A class
that no sample (or every sample) was classified as has no direction and is skipped.

For an hvae the latents are its top group's in standard form (`train.hvae.TopGroupLatents`:
u ~ N(0, I) is the group's prior; the lower groups at `hvae.temperature` from a fixed key), so
the same recipe applies: a direction moves the top of the hierarchy toward the class, and the
studio's class sliders use it (`genart sample --direction` is a GAN's).

`steering_shares` measures what a direction does: the share of held-out prior samples
classified k before and after adding direction k at a few strengths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genart_jax import checkpoint, sampling
from genart_jax.feedback import CheckpointGenerator, Generator, Judge

CHUNK = 512
REPORT_SEED_OFFSET = 10_000  # steering is measured on latents the directions were not fit on


class DirectionError(ValueError):
    """A directions request that cannot work (a VAE or conditional workdir, bad sizes)."""


def checkpoint_generator(workdir: str | Path, step: int | None = None, use_ema: bool = True
                         ) -> CheckpointGenerator:
    """The generator of an unconditional GAN or an hvae workdir; a VAE or a conditional GAN
    (whose class is its label, not a latent direction: use `genart sample --theme`) is a
    DirectionError."""
    from genart_jax.train.families import family_of

    cfg = checkpoint.workdir_config(workdir)
    model = cfg.model
    if not family_of(cfg).steers_latents:
        raise DirectionError(f"class directions are latent directions of a GAN or of an hvae's "
                             f"top latent group; {workdir} holds a {model.family.upper()} "
                             f"(model.arch={model.arch})")
    if model.num_classes > 0:
        raise DirectionError(f"{workdir} holds a conditional GAN ({model.num_classes} "
                             f"classes): its class is its label, pick it with `genart "
                             f"sample --theme K` instead of a latent direction")
    return CheckpointGenerator(workdir, step, use_ema)


def class_directions(latents: np.ndarray, predicted: np.ndarray, num_classes: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(directions (K, D), counts (K,)) for latents (N, D) with predicted classes (N,):
    direction k = mean(latents of class k) - mean(latents of the other classes). A class with
    no sample, or with all N, has no direction: its row is NaN (count 0 or N says which)."""
    z = np.asarray(latents, np.float64)
    pred = np.asarray(predicted)
    if z.ndim != 2 or pred.shape != (len(z),) or num_classes <= 0:
        raise ValueError(f"need latents (N, D), one prediction per latent and num_classes > 0; "
                         f"got {z.shape}, {pred.shape}, {num_classes}")
    if len(pred) and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted classes must be in 0..{num_classes - 1}")
    counts = np.bincount(pred.astype(np.int64), minlength=num_classes)
    directions = np.full((num_classes, z.shape[1]), np.nan)
    for k in range(num_classes):
        if 0 < counts[k] < len(z):
            directions[k] = sampling.attribute_direction(z[pred == k], z[pred != k])
    return directions.astype(np.float32), counts


def classify_prior(generator: Generator, judge: Judge, num: int, seed: int,
                   chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(latents (num, D), predicted classes (num,)) of `num` seeded prior latents, generated
    and classified `chunk` at a time. Latent i is `sampling.latents(seed, ...)`'s i-th whatever
    the chunk size."""
    if num <= 0 or chunk <= 0:
        raise DirectionError(f"number of samples and chunk must be positive, got {num}, {chunk}")
    zs, preds = [], []
    for start in range(0, num, chunk):
        z = np.asarray(sampling.latents(seed, min(chunk, num - start), generator.latent_dim,
                                        start=start))
        zs.append(z)
        preds.append(predict(generator, judge, z))
    return np.concatenate(zs), np.concatenate(preds)


def predict(generator: Generator, judge: Judge, z: np.ndarray) -> np.ndarray:
    """The judge's most probable class of each latent's image."""
    return np.argmax(np.asarray(judge.probabilities(generator(z))), axis=-1)


def steering_shares(generator: Generator, judge: Judge, directions: np.ndarray,
                    strengths: Sequence[float], *, num: int = 256, seed: int = 0,
                    chunk: int = CHUNK) -> dict[int, list[float]]:
    """{k: [share classified k at strength s for s in (0, *strengths)]} for every class with a
    direction, on `num` prior latents of `seed`."""
    z = np.asarray(sampling.latents(seed, num, generator.latent_dim))
    shares: dict[int, list[float]] = {}
    for k, d in enumerate(np.asarray(directions)):
        if np.isnan(d).any():
            continue
        row = []
        for s in (0.0, *strengths):
            moved = np.asarray(sampling.apply_direction(z, d, s))
            hits = np.concatenate([predict(generator, judge, moved[i:i + chunk])
                                   for i in range(0, num, chunk)]) == k
            row.append(float(hits.mean()))
        shares[k] = row
    return shares


def direction_rows(generator: Generator, directions: np.ndarray, strength: float, *,
                   cols: int = 8, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """(images, classes): a first row of `cols` seeded latents as they are, then one row per
    class with a direction, the same latents plus `strength` times that direction."""
    z = np.asarray(sampling.latents(seed, cols, generator.latent_dim))
    classes = [k for k, d in enumerate(directions) if not np.isnan(d).any()]
    rows = [z] + [np.asarray(sampling.apply_direction(z, directions[k], strength))
                  for k in classes]
    return generator(np.concatenate(rows)), classes


def labelled_rows(images: np.ndarray, labels: Sequence[str], cols: int, tile: int = 48
                  ) -> Image.Image:
    """Images (R * cols, H, W, C) in [-1, 1] as an RGB grid of R rows, `labels[r]` written
    left of row r; each tile upscaled (nearest) to about `tile` pixels."""
    grid = sampling.image_grid(images, ncols=cols)
    scale = max(1, tile // max(images.shape[1:3]))
    img = sampling.grid_image(grid, scale).convert("RGB")
    margin, row_h = 40, (images.shape[1] + 2) * scale
    out = Image.new("RGB", (img.size[0] + margin, img.size[1]), "white")
    out.paste(img, (margin, 0))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    for r, text in enumerate(labels):
        draw.text((3, r * row_h + row_h // 2 - 5), text, fill="black", font=font)
    return out


def find_directions(generator: Generator, judge: Judge, num_classes: int, out: str | Path, *,
                    num: int = 4096, seed: int = 0, strength: float = 2.0, cols: int = 8,
                    report: Sequence[float] = (), report_num: int = 256,
                    info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit the class directions on `num` prior samples and write OUT/class_K.npy (classes with
    a direction), OUT/directions.png (`direction_rows` at `strength`) and OUT/directions.json
    (`info`, counts, skipped classes, and with `report` strengths the steering shares on
    `report_num` latents of seed + REPORT_SEED_OFFSET). Returns the json's content."""
    z, pred = classify_prior(generator, judge, num, seed)
    directions, counts = class_directions(z, pred, num_classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = [k for k in range(num_classes) if not np.isnan(directions[k]).any()]
    for k in found:
        np.save(out / f"class_{k}.npy", directions[k])
    result: dict[str, Any] = {
        **(info or {}), "num": num, "seed": seed, "num_classes": num_classes,
        "counts": {str(k): int(c) for k, c in enumerate(counts)},
        "directions": {str(k): f"class_{k}.npy" for k in found},
        "norms": {str(k): round(float(np.linalg.norm(directions[k])), 4) for k in found},
        "skipped": {str(k): ("no sample classified as it" if counts[k] == 0 else
                             "every sample classified as it")
                    for k in range(num_classes) if k not in found},
        "png": {"file": "directions.png", "strength": strength, "columns": cols,
                "rows": ["none"] + [f"class {k}" for k in found]}}
    if found:
        images, _ = direction_rows(generator, directions, strength, cols=cols, seed=seed)
        labelled_rows(images, ["z"] + [f"+{k}" for k in found], cols).save(
            out / "directions.png")
    else:
        result["png"] = None
    if report:
        rseed = seed + REPORT_SEED_OFFSET
        shares = steering_shares(generator, judge, directions, report, num=report_num,
                                 seed=rseed)
        result["steering"] = {"num": report_num, "seed": rseed,
                              "strengths": [0.0, *map(float, report)],
                              "shares": {str(k): v for k, v in shares.items()}}
    (out / "directions.json").write_text(json.dumps(result, indent=2))
    return result
