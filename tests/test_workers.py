"""Reader worker processes (`genart_jax.data.workers.SharedMemoryPool` behind data.workers > 0):
the same batches and positions as reading in-process, exact resume mid-epoch, errors raised at
their batch, a dead worker an error (not a hang), nothing left in shared memory; and
data.workers=auto."""

import os

import numpy as np
import pytest

from genart_jax.data.pipeline import Position


class BrokenRead:
    """A worker read that fails at element `bad` (a DataError) or, with `exit_code`, kills its
    process there; the other elements are filled with k."""

    group = 1

    def __init__(self, bad: int, exit_code: int | None = None):
        self.bad, self.exit_code = bad, exit_code

    def into(self, k, images, labels):
        if k == self.bad:
            if self.exit_code is not None:
                os._exit(self.exit_code)
            from genart_jax.data import DataError

            raise DataError(f"record {k} is damaged")
        images[...] = k
        labels[...] = k


def make_dataset(tmp_path, count=38):
    """A prepared raw-record folder dataset, 8 px RGB, two classes."""
    from PIL import Image

    from genart_jax.data.folder import prepare_folder

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = tmp_path / "src" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    prepare_folder(tmp_path / "src", "wk", data_dir=str(tmp_path / "data"), size=8,
                   labels_from_subfolders=True, test_fraction=0)
    return str(tmp_path / "data")


def stream(data_dir, workers, position, count=7, **over):
    from genart_jax.data import make_input
    from tests.conftest import tiny_config

    cfg = tiny_config("dcgan", **{"data.name": "wk", "data.data_dir": data_dir,
                                  "data.image_size": "8", "data.channels": "3",
                                  "data.cache": "false", "data.workers": str(workers), **over})
    it, n = make_input(cfg.data, global_batch=8, seed=3, group=2, process_index=1,
                       process_count=2, position=position)
    try:
        return [next(it) for _ in range(count)], n
    finally:
        if hasattr(it, "close"):
            it.close()


def assert_same(got, want):
    assert len(got) == len(want)
    for (a, pa), (b, pb) in zip(got, want, strict=True):
        assert pa == pb
        assert a["image"].dtype == b["image"].dtype and a["label"].dtype == b["label"].dtype
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_workers_give_the_in_process_batches_and_resume_mid_epoch(tmp_path):
    data_dir = make_dataset(tmp_path)
    # 38 images, global batch 8: 4 batches an epoch; 7 elements of 2 batches cross 3 epochs.
    want, n = stream(data_dir, 0, Position(0, 1))
    assert n == 38 and want[-1][1] == Position(3, 3)
    assert want[0][0]["image"].shape == (2, 4, 8, 8, 3)
    assert len(np.unique(want[0][0]["label"])) == 2  # labels travel too
    for workers in (1, 2):
        assert_same(stream(data_dir, workers, Position(0, 1))[0], want)
    # Resumed mid-epoch from the position after element 2: the rest of the same stream.
    assert_same(stream(data_dir, 2, want[2][1], count=4)[0], want[3:])


def test_workers_read_a_tfds_source_like_in_process():
    """The digits (a TFDS source, no `read(out=)`): copied into the slots, same batches."""
    from genart_jax.data import make_input
    from tests.conftest import tiny_config

    got = []
    for workers in ("0", "2"):
        cfg = tiny_config("dcgan", **{"data.cache": "false", "data.image_size": "8",
                                      "data.workers": workers})
        it, _ = make_input(cfg.data, global_batch=16, seed=0, position=Position(0, 90))
        got.append([next(it) for _ in range(3)])
        getattr(it, "close", lambda: None)()
    assert_same(got[1], got[0])


def test_a_read_error_is_raised_at_its_batch_and_shared_memory_is_freed():
    from genart_jax.data import DataError
    from genart_jax.data.workers import SharedMemoryPool

    pool = SharedMemoryPool(BrokenRead(bad=3), workers=2, slots=4, shape=(4, 4, 1), local=2)
    path, procs = pool.path, list(pool._procs)
    for k in range(3):  # the elements before the bad one, in order
        batch = next(pool)
        assert batch["image"].shape == (1, 2, 4, 4, 1) and np.all(batch["image"] == k)
        assert np.all(batch["label"] == k) and batch["label"].dtype == np.int32
    with pytest.raises(DataError, match="record 3 is damaged"):
        next(pool)
    assert not os.path.exists(path) and not any(p.is_alive() for p in procs)
    with pytest.raises(StopIteration):  # closed
        next(pool)


def test_a_dead_worker_is_an_error_not_a_hang():
    from genart_jax.data.workers import SharedMemoryPool

    pool = SharedMemoryPool(BrokenRead(bad=1, exit_code=3), workers=1, slots=2,
                            shape=(2, 2, 1), local=1)
    assert np.all(next(pool)["image"] == 0)
    with pytest.raises(RuntimeError, match="exited with code 3"):
        next(pool)
    pool.close()
    assert not os.path.exists(pool.path)


def test_data_workers_is_a_count_or_auto():
    from genart_jax.config import ConfigError, apply_overrides
    from genart_jax.data.pipeline import auto_workers, resolve_workers
    from tests.conftest import tiny_config

    assert tiny_config("dcgan").data.workers == "auto"  # the default
    two = tiny_config("dcgan", **{"data.workers": "2"})
    assert two.data.workers == 2
    assert apply_overrides(two, {"data.workers": "auto"}).data.workers == "auto"
    with pytest.raises(ConfigError, match="data.workers' must be a count or 'auto'"):
        tiny_config("dcgan", **{"data.workers": "many"})
    assert [auto_workers(c) for c in (1, 2, 3, 4, 16, 64, 200)] == [0, 0, 1, 2, 8, 16, 16]
    streamed = tiny_config("dcgan", **{"data.cache": "false"}).data
    assert resolve_workers(streamed, cores=16) == 8
    assert resolve_workers(tiny_config("dcgan").data, cores=16) == 0  # cached: no workers
    assert resolve_workers(apply_overrides(two, {"data.cache": "false"}).data, cores=16) == 2
