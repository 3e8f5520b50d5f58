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
    read_split,
    to_model_input,
)
from genart_jax.data.digits import digits_arrays
from genart_jax.data.pipeline import advance, batches_per_epoch, subset_indices
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
    assert batch["image"].dtype == np.uint8 and batch["image"].min() < batch["image"].max()
    # Streaming reads the stored 8x8 images as they are: same batches as the cache at 8 px.
    native = tiny_config("dcgan", **{"data.image_size": "8"})
    uncached = tiny_config("dcgan", **{"data.cache": "false", "data.image_size": "8",
                                       "data.workers": "0"})
    want, _ = next(make_input(native.data, global_batch=16, seed=0, process_index=1,
                              process_count=2)[0])
    b2, _ = next(make_input(uncached.data, global_batch=16, seed=0, process_index=1,
                            process_count=2)[0])
    np.testing.assert_array_equal(b2["image"], want["image"])
    # ... and never resizes per batch: another size is an error saying what to do.
    with pytest.raises(DataError, match="stored at 8x8x1.*trains at 16x16x1.*data.cache=true"):
        make_input(tiny_config("dcgan", **{"data.cache": "false"}).data, global_batch=16,
                   seed=0)


def test_to_model_range_is_the_8bit_grid_under_jit():
    import jax
    import jax.numpy as jnp

    from genart_jax.data.convert import to_model_range, to_model_range_np

    k = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    want = k.astype(np.float64) / 127.5 - 1.0  # the bin centres of the discretised likelihood
    got = jax.jit(to_model_range)(k)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=2.5e-7, rtol=0)  # 2 ulp
    np.testing.assert_allclose(to_model_range_np(k), np.asarray(got), atol=2.5e-7, rtol=0)
    bf = jax.jit(lambda x: to_model_range(x, jnp.bfloat16))(k)
    assert bf.dtype == jnp.bfloat16 and float(bf.min()) == -1.0 and float(bf.max()) == 1.0
    x = np.linspace(-1, 1, 5, dtype=np.float32)  # already in the model's range: unchanged
    assert to_model_range(x) is x


def test_resized_data_lie_on_bin_centres():
    """Digits (8 px) trained at 16 px are resized once, rounded to uint8: every value the model
    and the VAE's discretised likelihood see is k / 127.5 - 1 for an integer k."""
    from genart_jax.data.convert import to_model_range_np
    from genart_jax.data.pipeline import load_cached

    images, _ = load_cached(tiny_config("dcgan").data)
    assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 1)
    x = to_model_range_np(images).astype(np.float64)
    k = (x + 1.0) * 127.5
    np.testing.assert_allclose(k, np.rint(k), atol=1e-4, rtol=0)
    assert len(np.unique(k.round())) > 100  # a resize, not a copy of 0/255 only
    evaluated, _ = read_split(tiny_config("dcgan").data, "train", limit=50)  # the host twin
    np.testing.assert_array_equal(evaluated,
                                  to_model_range_np(images[subset_indices(len(images), 50)]))


def test_a_limit_is_a_seeded_draw_over_the_whole_split():
    """`limit` examples of a split: sorted distinct indices drawn uniformly with
    default_rng(seed), not the first ones in file order; the whole split without a limit."""
    np.testing.assert_array_equal(subset_indices(10), np.arange(10))
    np.testing.assert_array_equal(subset_indices(10, 10), np.arange(10))
    np.testing.assert_array_equal(subset_indices(10, 25, seed=3), np.arange(10))
    draw = subset_indices(1000, 100, seed=0)
    np.testing.assert_array_equal(
        draw, np.sort(np.random.default_rng(0).choice(1000, 100, replace=False)))
    assert len(np.unique(draw)) == 100 and np.all(np.diff(draw) > 0)
    assert draw.max() > 900 and draw.min() < 100  # spread over the whole split
    np.testing.assert_array_equal(draw, subset_indices(1000, 100, seed=0))  # reproducible
    assert not np.array_equal(draw, subset_indices(1000, 100, seed=1))
    # Over many seeds each example is drawn about limit / n of the time (uniform).
    counts = np.bincount(np.concatenate([subset_indices(20, 5, s) for s in range(4000)]),
                         minlength=20)
    np.testing.assert_allclose(counts / 4000, 0.25, atol=0.03)
    data = tiny_config("dcgan").data
    first, _ = read_split(data, "test", limit=30, seed=0)
    whole, _ = read_split(data, "test")
    np.testing.assert_array_equal(first, whole[subset_indices(300, 30, seed=0)])
    assert not np.array_equal(first, whole[:30])


def test_epoch_permutation_is_computed_once_per_epoch():
    from genart_jax.data.pipeline import epoch_permutation

    epoch_permutation.cache_clear()
    it = BatchIterator(lambda idx: (idx[:, None, None, None], idx.astype(np.int32)), 1000,
                       global_batch=10, seed=1)
    for _ in range(150):  # one and a half epochs of 100 batches
        next(it)
    info = epoch_permutation.cache_info()
    assert info.misses == 2 and info.hits == 148
    assert not epoch_permutation(1, 0, 1000).flags.writeable


@pytest.mark.slow
def test_streaming_with_a_worker_resumes_bitwise_like_an_uninterrupted_in_process_run(tmp_path):
    """data.workers=1 (a grain worker process) stopped halfway and resumed ends in exactly
    the state of an uninterrupted run reading in-process (data.workers=0)."""
    import jax

    from genart_jax import checkpoint
    from genart_jax.config import apply_overrides
    from genart_jax.train import abstract_state, train_and_evaluate

    base = tiny_config("mlp", **{"data.image_size": "8", "data.cache": "false",
                                 "train.log_every": "1", "train.sample_every": "0",
                                 "checkpoint.every_steps": "0", "sample.num": "4"})

    def run(workers, workdir, steps):
        cfg = apply_overrides(base, {"data.workers": workers, "train.steps": str(steps)})
        train_and_evaluate(cfg, workdir, progress=False)
        return checkpoint.restore(workdir, abstract_state(cfg))[0]

    want = run("0", tmp_path / "full", 4)
    run("1", tmp_path / "resumed", 2)
    got = run("1", tmp_path / "resumed", 4)
    for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_worker_and_prefetch_counts_are_validated():
    from genart_jax.config import ConfigError

    for key in ("data.workers", "data.prefetch"):
        with pytest.raises(ConfigError, match="data.workers and data.prefetch must be >= 0"):
            tiny_config("dcgan", **{key: "-1"})


def test_decide_on_device_auto_puts_the_split_there_when_it_fits_the_fraction():
    from genart_jax.data.pipeline import decide_on_device, describe_input

    gib = 2**30
    # auto: at most fraction * memory of the smallest device, the boundary included.
    assert decide_on_device("auto", 2 * gib, 8 * gib, 0.25)[0] is True
    assert decide_on_device("auto", 2 * gib + 1, 8 * gib, 0.25)[0] is False
    assert decide_on_device("auto", 3 * gib, 8 * gib, 0.5)[0] is True
    on, why = decide_on_device("auto", 1536 * 2**20, 16 * gib, 0.25)
    assert on and why == ("data.on_device=auto: 1,536.0 MiB is 9.38% of the smallest device's "
                          "16.0 GiB, <= data.on_device_fraction 0.25")
    assert "37.50% of the smallest device's 8.0 GiB, > data.on_device_fraction 0.25" in (
        decide_on_device("auto", 3 * gib, 8 * gib)[1])
    # No memory size (CPU), no cache, or a driver that does not gather: host, saying why.
    assert decide_on_device("auto", 1024, None) == (
        False, "data.on_device=auto: the devices report no memory size (CPU), so host")
    assert "not cached" in decide_on_device("auto", None, 8 * gib)[1]
    assert decide_on_device("auto", 1024, 8 * gib, driver="pmap")[0] is False
    # The start line carries the decision and its numbers.
    cfg = tiny_config("dcgan")
    line = describe_input(cfg.data, None, 1497, ("cached",), (on, why))
    assert line.startswith("Data: 1497 images x 256 B = 0.4 MiB uint8, on every device")
    assert why in line


def test_explicit_on_device_wins_over_auto():
    from genart_jax.config import ConfigError, apply_overrides, base_config, validate
    from genart_jax.data.pipeline import decide_on_device

    gib = 2**30
    assert decide_on_device("true", 1024, None) == (True, "data.on_device=true")
    assert decide_on_device("false", 1024, 80 * gib) == (False, "data.on_device=false")
    assert decide_on_device("true", 60 * gib, 80 * gib, 0.25)[0] is True  # over the fraction
    assert base_config().data.on_device == "auto"
    for text, want in (("true", "true"), ("False", "false"), ("auto", "auto")):
        assert apply_overrides(base_config(), {"data.on_device": text}).data.on_device == want
    # A config saved while data.on_device was a bool (checkpoint metadata) keeps its meaning.
    old = base_config().to_dict()
    old["data"]["on_device"] = True
    import ml_collections

    assert validate(ml_collections.ConfigDict(old)).data.on_device == "true"
    legacy_recipe = base_config()
    legacy_recipe.data.on_device = False  # a recipe file from before "auto"
    assert validate(legacy_recipe).data.on_device == "false"
    with pytest.raises(ConfigError, match="'data.on_device' is 'sometimes'; choose one of"):
        apply_overrides(base_config(), {"data.on_device": "sometimes"})
    with pytest.raises(ConfigError, match="'data.on_device_fraction' must be in"):
        apply_overrides(base_config(), {"data.on_device_fraction": "1.5"})


def test_batches_gathered_on_the_devices_equal_host_batches():
    from genart_jax.data.pipeline import load_cached
    from genart_jax.train.loop import build_training

    cfg = tiny_config("dcgan")
    driver, _ = build_training(cfg)
    cached = load_cached(cfg.data)
    resident = driver.put_dataset(cached[0])
    host, _ = make_input(cfg.data, global_batch=16, seed=3, cached=cached, on_device=False)
    idx, _ = make_input(cfg.data, global_batch=16, seed=3, cached=cached, on_device=True)
    for _ in range(3):
        (want, _), (got, _) = next(host), next(idx)
        assert got["image"].dtype == np.int32
        gathered = driver.gather_placed(resident, driver.put_batch(got))
        assert gathered["image"].sharding == driver.put_batch(want)["image"].sharding
        np.testing.assert_array_equal(np.asarray(gathered["image"]), want["image"])
        np.testing.assert_array_equal(np.asarray(gathered["label"]), want["label"])
