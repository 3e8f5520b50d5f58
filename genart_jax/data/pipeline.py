"""The input pipeline: seeded per-epoch permutations, a per-process slice of each global batch,
preprocessing to model inputs, and a background prefetch thread.

Batch b of epoch e is `permutation(seed, e)[b * B : (b + 1) * B]` for global batch B (the
remainder of an epoch is dropped); process p of P reads only the p-th contiguous block of it, so
the global batch and its order are the same for any process count. The position (epoch, batch)
of the next batch is a small record the checkpoint stores, so a resumed run sees exactly the
batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from genart_jax.data.convert import to_model_range_np, to_training_pixels
from genart_jax.data.sources import DataError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Position:
    """Where the next global batch starts: epoch number and batch index within that epoch."""

    epoch: int = 0
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The seeded order of epoch `epoch`, computed once per epoch (cached, read-only)."""
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    perm.flags.writeable = False
    return perm


def batches_per_epoch(n: int, global_batch: int) -> int:
    if global_batch > n:
        from genart_jax.data.sources import DataError

        raise DataError(f"global batch {global_batch} is larger than the dataset ({n} "
                        f"examples); set train.batch_size to at most {n}")
    return n // global_batch


def process_indices(seed: int, pos: Position, n: int, global_batch: int,
                    process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """Indices of this process's block of the global batch at `pos`."""
    local = global_batch // process_count
    start = pos.batch * global_batch + process_index * local
    return epoch_permutation(seed, pos.epoch, n)[start:start + local]


def advance(pos: Position, per_epoch: int) -> Position:
    nxt = pos.batch + 1
    return Position(pos.epoch + 1, 0) if nxt >= per_epoch else Position(pos.epoch, nxt)


def to_model_input(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, S, S, channels) in [-1, 1] on the 8-bit grid: channel
    conversion, centre crop to square, bicubic resize rounded to uint8, then scaling (for
    evaluation on the host; training keeps uint8 and scales inside the step)."""
    return to_model_range_np(to_training_pixels(images, image_size, channels))


def stack(arrays: list[np.ndarray]) -> np.ndarray:
    """np.stack, without the copy when there is one array (a view with a leading axis)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


class BatchIterator:
    """Yields (batch, next_position): batch = {"image": (group, local_batch, S, S, C) uint8,
    "label": (group, local_batch) int32}, `group` consecutive global batches stacked (one per
    discriminator update)."""

    def __init__(self, fetch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], n: int, *,
                 global_batch: int, seed: int, group: int = 1, process_index: int = 0,
                 process_count: int = 1, position: Position = Position()):
        self.fetch, self.n, self.global_batch, self.seed = fetch, n, global_batch, seed
        self.group, self.process_index, self.process_count = group, process_index, process_count
        self.per_epoch = batches_per_epoch(n, global_batch)
        self.position = position

    def __iter__(self) -> Iterator[tuple[Batch, Position]]:
        return self

    def __next__(self) -> tuple[Batch, Position]:
        images, labels = [], []
        for _ in range(self.group):
            idx = process_indices(self.seed, self.position, self.n, self.global_batch,
                                  self.process_index, self.process_count)
            x, y = self.fetch(idx)
            images.append(x)
            labels.append(y)
            self.position = advance(self.position, self.per_epoch)
        return {"image": stack(images), "label": stack(labels)}, self.position


def prefetch(iterator: Iterator[Any], size: int) -> Iterator[Any]:
    """Run `iterator` on a daemon thread, `size` items ahead; errors re-raise in the caller.
    Closing the result stops the thread and waits for it (and closes `iterator`), so no thread
    is left inside a JAX or reader call when the interpreter exits: a thread killed there at
    exit aborts the process ("terminate called after throwing ...")."""
    if size <= 0:
        yield from iterator
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer
            put(e)
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        put(done)

    thread = threading.Thread(target=work, daemon=True, name="genart-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


def check_label_range(labels: np.ndarray, num_classes: int) -> None:
    """A conditional model (num_classes > 0) needs every label in 0..num_classes-1; an
    out-of-range label would index past its embedding (NaN) or, one-hot, vanish silently."""
    if num_classes <= 0 or labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise DataError(f"the training data has label {high if high >= num_classes else low}, "
                        f"outside 0..{num_classes - 1} of model.num_classes={num_classes}; set "
                        "model.num_classes to the dataset's number of classes")


def stored_shape(source: Any) -> tuple[int, int, int]:
    """(H, W, C) of the source's images (a RawSource says; others: its first example)."""
    if hasattr(source, "shape"):
        return tuple(source.shape)
    img = np.asarray(source[0]["image"])
    return (*img.shape[:2], 1 if img.ndim == 2 else img.shape[2])


def check_prepared(source: Any, data_cfg: Any) -> None:
    """A dataset prepared by `genart prepare folder` records its size and channels (the
    commands' defaults: `data.defaults`); a config that disagrees is a one-line DataError
    naming both."""
    record = getattr(source, "record", None)
    if record is None:
        return
    want = (data_cfg.image_size, data_cfg.channels)
    have = (record["size"], record["channels"])
    if want != have:
        raise DataError(
            f"dataset '{record['name']}' was prepared at {have[0]}x{have[0]}x{have[1]} from "
            f"{record['source']}, but the config asks data.image_size={want[0]} "
            f"data.channels={want[1]}; leave the size and channels unset (they default to the "
            f"prepared ones) or set them to {have[0]} and {have[1]}, or prepare it again: "
            f"genart prepare folder {record['source']} --name {record['name']} --size "
            f"{want[0]} --channels {want[1]} --overwrite")


def check_streamable(source: Any, data_cfg: Any) -> None:
    """Streaming never resizes per batch: the stored images must be at the training size."""
    shape = stored_shape(source)
    want = (data_cfg.image_size, data_cfg.image_size, data_cfg.channels)
    if shape != want:
        raise DataError(
            f"dataset '{data_cfg.name}' is stored at {shape[0]}x{shape[1]}x{shape[2]}, the "
            f"config trains at {want[0]}x{want[1]}x{want[2]} with data.cache=false (streaming "
            f"does not resize per batch): set data.cache=true (one conversion, kept in memory "
            f"as uint8), or prepare the images at that size (genart prepare folder PATH --name "
            f"NAME --size {want[0]} --channels {want[2]})")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(cores: int) -> int:
    """data.workers=auto: none on 1-2 cores, else half the host's cores, at most 16 (4 cores:
    2, 16 cores: 8). The other half is the training process's (its Python loop, XLA's dispatch
    and copies, checkpoint writers). On the shared 2-core machine (load 13-18) workers bought
    nothing over in-process reading, which has no spare core to take from
    (benchmarks/results/cpu-2core-workers); each worker reads about one core's worth (~3,600
    img/s at 256 px, ~30,000 at 64 px, on a quiet core)."""
    return 0 if cores <= 2 else min(16, cores // 2)


def resolve_workers(data_cfg: Any, cores: int | None = None) -> int:
    """Reader processes for streaming: data.workers, `auto_workers` of the host's cores for
    "auto"; none for cached data (batches are slices of host memory)."""
    if data_cfg.cache:
        return 0
    if data_cfg.workers == "auto":
        return auto_workers(available_cores() if cores is None else cores)
    return int(data_cfg.workers)


class ReadBatches:
    """Picklable, for reader worker processes: element k -> this process's block of `group`
    consecutive global batches, counted from `start` (a linear batch number)."""

    def __init__(self, name: str, split: str, data_dir: str, n: int, *, global_batch: int,
                 seed: int, group: int, process_index: int, process_count: int, start: int):
        self.spec = (name, split, data_dir)
        self.n, self.global_batch, self.seed, self.group = n, global_batch, seed, group
        self.process_index, self.process_count, self.start = process_index, process_count, start
        self.per_epoch = batches_per_epoch(n, global_batch)
        self._source = None

    def __getstate__(self):
        return dict(self.__dict__, _source=None)

    def indices(self, k: int, g: int) -> np.ndarray:
        """Example indices of batch g of element k."""
        linear = self.start + int(k) * self.group + g
        pos = Position(linear // self.per_epoch, linear % self.per_epoch)
        return process_indices(self.seed, pos, self.n, self.global_batch, self.process_index,
                               self.process_count)

    def into(self, k: int, images: np.ndarray, labels: np.ndarray) -> None:
        """Write element k into `images` uint8 (group, local, H, W, C) and `labels` int32
        (group, local): a raw-record source reads straight into `images` (one copy)."""
        from genart_jax.data.sources import open_source, read_examples

        if self._source is None:
            self._source = open_source(*self.spec)
        for g in range(self.group):
            idx = self.indices(k, g)
            if hasattr(self._source, "read"):
                _, y = self._source.read(idx, out=images[g])
            else:
                x, y = read_examples(self._source, idx)
                images[g] = x
            labels[g] = y

    def __call__(self, k: int) -> Batch:
        from genart_jax.data.sources import open_source, read_examples

        if self._source is None:
            self._source = open_source(*self.spec)
        images, labels = zip(*(read_examples(self._source, self.indices(k, g))
                               for g in range(self.group)), strict=True)
        return {"image": stack(list(images)), "label": stack(list(labels))}


class WorkerBatchIterator:
    """The streaming iterator with reader worker processes: the same (batch, next_position)
    stream as `BatchIterator` over the same source, for any worker count (elements come back
    in order); its state is the position, so checkpoints are unchanged. Batches are handed over
    in shared memory (`genart_jax.data.workers.SharedMemoryPool`), `buffer` (at least 2)
    elements in flight per worker. `shape`: one stored image's (H, W, C)."""

    def __init__(self, read: ReadBatches, *, workers: int, buffer: int, position: Position,
                 shape: tuple[int, int, int]):
        from genart_jax.data.workers import SharedMemoryPool

        self.read, self.position = read, position
        self._pool = SharedMemoryPool(read, workers=workers, slots=workers * max(2, buffer),
                                      shape=shape,
                                      local=read.global_batch // read.process_count)

    def __iter__(self) -> Iterator[tuple[Batch, Position]]:
        return self

    def __next__(self) -> tuple[Batch, Position]:
        batch = next(self._pool)
        for _ in range(self.read.group):
            self.position = advance(self.position, self.read.per_epoch)
        return batch, self.position

    def close(self) -> None:
        """Stop the workers and free the shared memory (`prefetch` calls it when closed)."""
        self._pool.close()


def make_input(data_cfg: Any, *, global_batch: int, seed: int, group: int = 1,
               process_index: int = 0, process_count: int = 1,
               position: Position = Position(), cached: tuple | None = None,
               on_device: bool | None = None
               ) -> tuple[BatchIterator | WorkerBatchIterator, int]:
    """The training input for a config's `data` section: (iterator, number of examples).
    Images are uint8 at the training size; the step scales them (`to_model_range`).

    `cached`: the whole split already at the training size, (images uint8, labels); with
    `on_device` (default: data.on_device == "true"; the loop passes `decide_on_device`'s
    answer) the iterator then yields example indices in place of images ({"image":
    int32 indices}), for the batch to be gathered on the device. Streaming (data.cache=false)
    reads each batch from the files, in reader worker processes when data.workers > 0."""
    from genart_jax.data.sources import open_source, read_examples

    if cached is None and data_cfg.cache:
        cached = load_cached(data_cfg)
    kw = dict(global_batch=global_batch, seed=seed, group=group, process_index=process_index,
              process_count=process_count)
    if cached is not None:
        images, labels = cached
        n = len(images)
        if on_device is None:
            on_device = data_cfg.on_device == "true"

        def fetch(idx):
            return (idx.astype(np.int32) if on_device else images[idx]), labels[idx]
        return BatchIterator(fetch, n, position=position, **kw), n
    source = open_source(data_cfg.name, data_cfg.split, data_cfg.data_dir)
    check_prepared(source, data_cfg)
    check_streamable(source, data_cfg)
    n = len(source)
    workers = resolve_workers(data_cfg)
    if workers > 0:
        read = ReadBatches(data_cfg.name, data_cfg.split, data_cfg.data_dir, n,
                           start=position.epoch * batches_per_epoch(n, global_batch)
                           + position.batch, **kw)
        return WorkerBatchIterator(read, workers=workers, buffer=data_cfg.prefetch,
                                   position=position, shape=stored_shape(source)), n

    def fetch(idx):
        return read_examples(source, idx)
    return BatchIterator(fetch, n, position=position, **kw), n


def load_cached(data_cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The configured split, whole, at the training size: (images uint8, labels int32)."""
    return read_split_pixels(data_cfg, data_cfg.split)


def subset_indices(n: int, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """The examples of a split of `n` that a `limit` selects: all of them in file order (no
    limit, or one of at least `n`), else `limit` drawn uniformly without replacement from the
    whole split with `numpy.random.default_rng(seed)`, in increasing order. Not the first
    `limit` in file order: a folder is prepared in sorted path order, so its first files are
    often one kind of picture."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max(int(limit), 0),
                                                      replace=False))


def split_length(data_cfg: Any, split: str) -> int:
    """The number of examples in `split` of the config's dataset."""
    from genart_jax.data.sources import open_source

    return len(open_source(data_cfg.name, split, data_cfg.data_dir))


def read_split_pixels(data_cfg: Any, split: str, limit: int | None = None, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A whole split, or the seeded random `limit` of it that `subset_indices(n, limit, seed)`
    draws, at the training size, one conversion on the 8-bit grid: (images uint8 (N, S, S,
    C), labels int32 (N,))."""
    from genart_jax.data.sources import open_source, read_examples

    source = open_source(data_cfg.name, split, data_cfg.data_dir)
    check_prepared(source, data_cfg)
    images, labels = read_examples(source, subset_indices(len(source), limit, seed))
    return to_training_pixels(images, data_cfg.image_size, data_cfg.channels), labels


def read_split(data_cfg: Any, split: str, limit: int | None = None, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """`read_split_pixels` scaled like the model's input, for evaluation on the host: (images
    float32 (N, S, S, C) in [-1, 1], labels int32 (N,))."""
    images, labels = read_split_pixels(data_cfg, split, limit, seed)
    return to_model_range_np(images), labels


ON_DEVICE_FRACTION = 0.25  # default share of one device's memory a resident dataset may take


def device_memory_bytes(devices: Any = None) -> int | None:
    """The smallest memory (`memory_stats()["bytes_limit"]`) of this process's devices (of
    `devices`, default all), or None when a device reports none (the CPU backend)."""
    import jax

    local = [d for d in (jax.devices() if devices is None else devices)
             if d.process_index == jax.process_index()]
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in local]
    return None if not limits or not all(limits) else int(min(limits))


def decide_on_device(setting: str, nbytes: int | None, device_bytes: int | None,
                     fraction: float = ON_DEVICE_FRACTION, *, driver: str = "shard_map"
                     ) -> tuple[bool, str]:
    """(keep the cached uint8 split on every device?, the reason with its numbers). An explicit
    data.on_device "true"/"false" wins; "auto" says yes when the split is cached (`nbytes` not
    None), the driver gathers on the devices (shard_map) and the split takes at most `fraction`
    of the smallest device's memory; unknown memory (CPU) keeps today's host batches."""
    if setting in ("true", "false"):
        return setting == "true", f"data.on_device={setting}"
    if nbytes is None:
        return False, "data.on_device=auto: not cached (data.cache=false), so streamed"
    if driver != "shard_map":
        return False, f"data.on_device=auto: driver {driver} gathers no batches on the devices"
    if not device_bytes:
        return False, "data.on_device=auto: the devices report no memory size (CPU), so host"
    share, fits = nbytes / device_bytes, nbytes <= fraction * device_bytes
    return fits, (f"data.on_device=auto: {nbytes / 2**20:,.1f} MiB is {100 * share:.2f}% of the "
                  f"smallest device's {device_bytes / 2**30:,.1f} GiB, "
                  f"{'<=' if fits else '>'} data.on_device_fraction {fraction:g}")


def describe_input(data_cfg: Any, iterator: Any, n: int, cached: tuple | None,
                   decision: tuple[bool, str] = (False, "")) -> str:
    """The one line printed at start: where the batches come from, with the numbers, and the
    `decide_on_device` decision with its reason."""
    s, c = data_cfg.image_size, data_cfg.channels
    nbytes = n * s * s * c
    size = f"{n} images x {s * s * c:,} B = {nbytes / 2**20:,.1f} MiB uint8"
    on_device, reason = decision
    why = f" ({reason})" if reason else ""
    if cached is not None and on_device:
        return f"Data: {size}, on every device, batches gathered there{why}"
    if cached is not None:
        return (f"Data: {size}, cached in host memory (data.cache); prefetch "
                f"{data_cfg.prefetch}{why}")
    workers = resolve_workers(data_cfg) if isinstance(iterator, WorkerBatchIterator) else 0
    return (f"Data: {size}, streamed from the files (data.cache=false) by "
            f"{workers or 'no'} worker process(es) (data.workers={data_cfg.workers}); "
            f"prefetch {data_cfg.prefetch}{why}")
