"""The embedded dataset, preprocessing and the deterministic per-process sampler."""

import numpy as np
import pytest

from genart_jax.data import (
    BatchIterator,
    DataError,
    Position,
    make_input,
    open_source,
    prefetch,
    process_indices,
    to_model_input,
)
from genart_jax.data.digits import digits_arrays
from genart_jax.data.pipeline import advance, batches_per_epoch
from tests.conftest import tiny_config


def test_digits_builder_matches_scikit_learn(tfds_data_dir):
    train = open_source("digits", "train")
    test = open_source("digits", "test", str(tfds_data_dir))
    assert (len(train), len(test)) == (1497, 300)
    images, labels = digits_arrays()
    # TFDS stores the examples in a hashed order: compare the splits as sets of (image, label).
    def keyed(imgs, labs):
        return sorted(im.tobytes() + bytes([int(lab)]) for im, lab in zip(imgs, labs, strict=True))

    got = [train[i] for i in range(len(train))]
    assert keyed([ex["image"] for ex in got], [ex["label"] for ex in got]) == keyed(
        images[:1497], labels[:1497])
    assert (tfds_data_dir / "digits").is_dir()


def test_digits_wrong_split_is_an_error():
    with pytest.raises(DataError, match="not 'validation'"):
        open_source("digits", "validation")


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(DataError, match="(?s)not prepared.*genart prepare mnist.*data.data_dir"):
        open_source("mnist", "train", str(tmp_path))
    with pytest.raises(DataError, match="unknown TFDS dataset 'no_such_set'"):
        open_source("no_such_set", "train", str(tmp_path))


def test_to_model_input_resizes_and_scales():
    images = np.zeros((3, 8, 8, 1), np.uint8)
    images[:, 2:6, 2:6] = 255
    x = to_model_input(images, 32, 1)
    assert x.shape == (3, 32, 32, 1) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert x[0, 16, 16, 0] == 1.0 and x[0, 0, 0, 0] == -1.0
    rgb = to_model_input(np.full((2, 10, 6, 1), 51, np.uint8), 4, 3)  # crop 10x6 -> 6x6
    assert rgb.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(rgb, 51 / 127.5 - 1, atol=1e-5)
    grey = to_model_input(np.full((1, 4, 4, 3), 200, np.uint8), 4, 1)
    np.testing.assert_allclose(grey, 200 / 127.5 - 1, atol=1e-4)


def test_sampler_is_deterministic_and_covers_each_index_once_per_epoch_across_processes():
    n, batch, procs = 103, 20, 2
    per_epoch = batches_per_epoch(n, batch)
    assert per_epoch == 5
    for epoch in range(2):
        seen = []
        pos = Position(epoch, 0)
        for _ in range(per_epoch):
            parts = [process_indices(7, pos, n, batch, p, procs) for p in range(procs)]
            assert all(len(part) == batch // procs for part in parts)
            # The processes' blocks, in order, are exactly the single-process global batch.
            np.testing.assert_array_equal(np.concatenate(parts), process_indices(7, pos, n, batch))
            seen.extend(np.concatenate(parts))
            pos = advance(pos, per_epoch)
        assert pos == Position(epoch + 1, 0)
        assert len(seen) == len(set(seen)) == per_epoch * batch  # each index at most once
    first = process_indices(7, Position(0, 0), n, batch)
    assert not np.array_equal(first, process_indices(7, Position(1, 0), n, batch))
    assert not np.array_equal(first, process_indices(8, Position(0, 0), n, batch))


def test_iterator_resumes_exactly_from_a_position():
    data = np.arange(50, dtype=np.float32)[:, None, None, None]

    def fetch(idx):
        return data[idx], idx.astype(np.int32)

    it = BatchIterator(fetch, 50, global_batch=8, seed=3, group=2)
    stream = [next(it) for _ in range(5)]
    assert stream[0][0]["image"].shape == (2, 8, 1, 1, 1)
    resumed = BatchIterator(fetch, 50, global_batch=8, seed=3, group=2,
                            position=stream[1][1])
    for (want, want_pos), (got, got_pos) in zip(stream[2:], [next(resumed) for _ in range(3)],
                                                strict=True):
        np.testing.assert_array_equal(want["label"], got["label"])
        assert want_pos == got_pos


def test_prefetch_yields_in_order_and_reraises_errors():
    assert list(prefetch(iter(range(10)), 3)) == list(range(10))

    def broken():
        yield 1
        raise OSError("disk gone")

    stream = prefetch(broken(), 2)
    assert next(stream) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(stream)


def test_make_input_digits_batches():
    cfg = tiny_config("dcgan")
    it, n = make_input(cfg.data, global_batch=16, seed=0, group=1, process_index=1,
                       process_count=2)
    batch, pos = next(it)
    assert n == 1497 and pos == Position(0, 1)
    assert batch["image"].shape == (1, 8, 16, 16, 1) and batch["label"].shape == (1, 8)
    assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0
    uncached = tiny_config("dcgan", **{"data.cache": "false"})
    it2, _ = make_input(uncached.data, global_batch=16, seed=0, process_index=1,
                        process_count=2)
    b2, _ = next(it2)
    np.testing.assert_allclose(b2["image"], batch["image"], atol=1e-6)
