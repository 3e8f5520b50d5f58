"""The embedded dataset: scikit-learn's bundled handwritten digits as a project-owned TFDS builder.

1797 greyscale 8x8 images of the digits 0-9 (values 0..16, stored as uint8 0..255), no download:
the data ship inside scikit-learn. Features are `tfds.features.Tensor`, so preparing to
array_record needs no TensorFlow. Splits are fixed: the first 1497 images are `train`, the last
300 `test`.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NUM_TRAIN = 1497


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 8, 8, 1) scaled 0..255, labels int64 (1797,)) from scikit-learn."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, read from disk

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, d.target.astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits (UCI optdigits test set), 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Handwritten digits 0-9, 8x8 greyscale, bundled with scikit-learn.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _log_download_bytes(self) -> None:
        """Silent: TFDS would print 'Downloading ... Unknown size' for data never downloaded."""

    def _log_download_done(self) -> None:
        """Silent: the caller says what was prepared."""

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels = digits_arrays()
        return {
            "train": self._generate_examples(images[:NUM_TRAIN], labels[:NUM_TRAIN], 0),
            "test": self._generate_examples(images[NUM_TRAIN:], labels[NUM_TRAIN:], NUM_TRAIN),
        }

    def _generate_examples(self, images, labels, offset):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield offset + i, {"image": image, "label": label}
