"""Sample quality of a trained model: its samples and held-out real images through a feature
network (a package-trained classifier or a user's extractor), then `metrics.compute`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from genart_jax import metrics, selfsup
from genart_jax.classifier import (
    META_FILE,
    Classifier,
    ClassifierError,
    Extractor,
    default_dir,
    load_extractor,
    matching_classifier,
    train_command,
)

GENERATE_CHUNK = 500
INCEPTION_BATCH = 50


def parse_metrics(text: str) -> tuple[str, ...]:
    """"fid,kid,pr" -> ("fid", "kid", "pr"); an unknown name is a ValueError."""
    which = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [w for w in which if w not in metrics.METRICS]
    if not which or unknown:
        raise ValueError(f"--metrics takes a comma-separated subset of "
                         f"{','.join(metrics.METRICS)}, got {text!r}")
    return which


INCEPTION_NAME = "FID Inception-v3"


def inception_extractor(weights: str | Path) -> Extractor:
    """The FID Inception-v3 (pool3, 2048-d) with the weights in `weights` (.npz/.safetensors)."""
    from genart_jax.models import inception

    try:
        params = inception.load_params(weights)
    except inception.WeightsError as e:
        raise ClassifierError(str(e)) from e
    return Extractor(inception.FIDInceptionV3(), params, INCEPTION_NAME,
                     batch=INCEPTION_BATCH)


def feature_network(data_cfg: Any, classifier: str | None = None,
                    extractor: str | None = None, extractor_params: str | None = None,
                    extractor_kwargs: str | None = None) -> Classifier | Extractor:
    """The feature network `extractor` names: "classifier" (in `classifier`, default the
    package's folder for this dataset and size), "selfsup" (the SimCLR encoder in
    `extractor_params`, default its folder), "inception" (weights file `extractor_params`) or
    a user's module "package.module:Class". Without one: the classifier if it is trained,
    else the self-supervised encoder; a missing network says how to train it."""
    if extractor == "classifier" or (extractor is None and classifier):
        return matching_classifier(data_cfg, classifier, purpose=" for the metrics' features",
                                   alternative=", or give another with --extractor")
    if extractor == "selfsup":
        return selfsup.matching_encoder(data_cfg, extractor_params)
    if extractor == "inception":
        if not extractor_params:
            raise ClassifierError("--extractor inception needs --extractor-params "
                                  "WEIGHTS.npz (see scripts/convert_fid_inception.py)")
        return inception_extractor(extractor_params)
    if extractor:
        if not extractor_params:
            raise ClassifierError("--extractor needs --extractor-params FILE.msgpack")
        return load_extractor(extractor, extractor_params, extractor_kwargs)
    if (default_dir(data_cfg.name, data_cfg.image_size) / META_FILE).is_file():
        return matching_classifier(data_cfg, None)
    if (selfsup.default_dir(data_cfg.name, data_cfg.image_size) / selfsup.META_FILE).is_file():
        return selfsup.matching_encoder(data_cfg, None)
    size, ch = data_cfg.image_size, data_cfg.channels
    raise ClassifierError(
        f"no feature network for {data_cfg.name} at {size}x{size}x{ch}: train the "
        f"label-free one with `{selfsup.train_command(data_cfg.name, size, ch)}` (any "
        f"dataset), or a classifier with `{train_command(data_cfg.name, size, ch)}` "
        f"(labelled data), or use --extractor inception --extractor-params WEIGHTS.npz")


def model_samples(cfg: ml_collections.ConfigDict, state: Any, *, num: int, seed: int = 0,
                  use_ema: bool = True) -> np.ndarray:
    """`num` samples (N, S, S, C) in [-1, 1]: a GAN's generator (EMA weights with recalibrated
    BatchNorm by default) or a VAE's decoder means at prior latents; made in chunks of
    `GENERATE_CHUNK` (chunk c uses seed `seed * 1_000_003 + c`) so memory stays bounded."""
    if num <= 0:
        raise ValueError(f"number of samples must be positive, got {num}")
    from genart_jax.train.families import family_of

    family = family_of(cfg)
    params, stats, _ = family.variables(cfg, state, use_ema)

    def make(n, s):
        return family.generate(cfg, params, stats, num=n, seed=s)
    chunk = min(num, GENERATE_CHUNK)
    out = [make(chunk, seed * 1_000_003 + c) for c in range(-(-num // chunk))]
    return np.concatenate(out)[:num]


def resize_like_data(images: np.ndarray, size: int) -> np.ndarray:
    """Images (N, s, s, C) in [-1, 1] at `size` x `size`, made as the data pipeline makes real
    images of any size (8-bit grid, Pillow bicubic: `data.convert.resize_uint8`), so samples
    of a model trained at another size (the 28 px VAE) enter a 32 px feature network the way
    the reals did. Unchanged when already that size."""
    from genart_jax.data.convert import resize_uint8, to_model_range_np

    if images.shape[1] == size and images.shape[2] == size:
        return images
    pixels = np.clip(np.rint((np.asarray(images, np.float64) + 1) * 127.5), 0, 255)
    return to_model_range_np(resize_uint8(pixels.astype(np.uint8), size))


def evaluate(net: Classifier | Extractor, real: np.ndarray, fake: np.ndarray,
             which: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """The asked metrics of `fake` against `real` images in `net`'s feature space."""
    return metrics.compute(net.features(real), net.features(fake), net.name, which, seed=seed)


def compare(data_cfg: Any, split: str, which: tuple[str, ...],
            fake_fn: Callable[[int], np.ndarray], *, num: int | None = None,
            limit: int | None = None, subset_seed: int = 0, seed: int = 0,
            classifier: str | None = None, extractor: str | None = None,
            extractor_params: str | None = None, extractor_kwargs: str | None = None
            ) -> dict[str, Any]:
    """The metrics `which` of `fake_fn(num)` images against the real images of `split` (all,
    or `limit` of them drawn with `subset_seed`; `num` defaults to as many), both through the
    feature network `feature_network` picks, with what was compared."""
    from genart_jax.data import read_split
    from genart_jax.data.pipeline import split_length
    from genart_jax.train.requests import RequestError

    if num is not None and num <= 0:  # before anything is loaded
        raise RequestError(f"--num must be positive, got {num}")
    if limit is not None and limit <= 0:
        raise RequestError(f"--limit must be positive, got {limit}")
    net = feature_network(data_cfg, classifier, extractor, extractor_params, extractor_kwargs)
    real, _ = read_split(data_cfg, split, limit, seed=subset_seed)
    num = len(real) if num is None else num  # --num 0 is an error, not "all"
    if num <= 0:
        raise RequestError(f"no real images in split {split} to compare with")
    fake = fake_fn(num)
    try:
        result = evaluate(net, real, fake, which, seed=seed)
    except ClassifierError:
        raise
    except ValueError as e:  # too few images for a metric
        raise RequestError(str(e)) from e
    return {"features": net.name, "features_fingerprint": net.fingerprint,
            "real_split": split, "real_images": len(real),
            "real_split_images": split_length(data_cfg, split), "subset_seed": subset_seed,
            "generated_images": len(fake), **result}


def check_comparable(results_file: str | Path, result: dict[str, Any]) -> None:
    """Refuse to add `result` to a results file (JSON lines) that holds numbers in a feature
    space of the same name from another network (another fingerprint): such numbers look
    comparable and are not."""
    path = Path(results_file)
    if "features" not in result or not path.is_file():
        return
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            old = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (isinstance(old, dict) and old.get("features") == result["features"]
                and old.get("features_fingerprint") != result.get("features_fingerprint")):
            raise ClassifierError(
                f"{path} line {n} holds metrics in '{result['features']}' features of another "
                f"network (fingerprint {old.get('features_fingerprint', 'unrecorded')}, now "
                f"{result.get('features_fingerprint')}); numbers of different feature networks "
                f"are not comparable: move {path} aside to start a new results file")
