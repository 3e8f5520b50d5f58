"""Sample quality of a trained model: its samples and held-out real images through a feature
network (a package-trained classifier or a user's extractor), then `metrics.compute`."""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from genart_jax import metrics, sampling
from genart_jax.classifier import (
    Classifier,
    ClassifierError,
    Extractor,
    load_extractor,
    matching_classifier,
)

GENERATE_CHUNK = 500


def parse_metrics(text: str) -> tuple[str, ...]:
    """"fid,kid,pr" -> ("fid", "kid", "pr"); an unknown name is a ValueError."""
    which = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [w for w in which if w not in metrics.METRICS]
    if not which or unknown:
        raise ValueError(f"--metrics takes a comma-separated subset of "
                         f"{','.join(metrics.METRICS)}, got {text!r}")
    return which


def feature_network(data_cfg: Any, classifier: str | None = None,
                    extractor: str | None = None, extractor_params: str | None = None,
                    extractor_kwargs: str | None = None) -> Classifier | Extractor:
    """The user's extractor if given, else the classifier in `classifier` (default: the
    package's default folder for this dataset and size), checked against `data_cfg`."""
    if extractor:
        if not extractor_params:
            raise ClassifierError("--extractor needs --extractor-params FILE.msgpack")
        return load_extractor(extractor, extractor_params, extractor_kwargs)
    return matching_classifier(data_cfg, classifier, purpose=" for the metrics' features",
                               alternative=", or give your own with --extractor")


def model_samples(cfg: ml_collections.ConfigDict, state: Any, *, num: int, seed: int = 0,
                  use_ema: bool = True) -> np.ndarray:
    """`num` samples (N, S, S, C) in [-1, 1]: a GAN's generator (EMA weights with recalibrated
    BatchNorm by default) or a VAE's decoder means at prior latents; made in chunks of
    `GENERATE_CHUNK` (chunk c uses seed `seed * 1_000_003 + c`) so memory stays bounded."""
    if num <= 0:
        raise ValueError(f"number of samples must be positive, got {num}")
    if cfg.model.family == "vae":
        from genart_jax.train import vae

        def make(n, s):
            return vae.prior_samples(cfg, state.params, num=n, seed=s)
    else:
        params, stats = sampling.generator_variables(cfg, state, use_ema)

        def make(n, s):
            return sampling.generate(cfg, params, stats, num=n, seed=s)
    chunk = min(num, GENERATE_CHUNK)
    out = [make(chunk, seed * 1_000_003 + c) for c in range(-(-num // chunk))]
    return np.concatenate(out)[:num]


def evaluate(net: Classifier | Extractor, real: np.ndarray, fake: np.ndarray,
             which: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """The asked metrics of `fake` against `real` images in `net`'s feature space."""
    return metrics.compute(net.features(real), net.features(fake), net.name, which, seed=seed)
