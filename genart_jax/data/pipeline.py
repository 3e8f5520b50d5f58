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
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Position:
    """Where the next global batch starts: epoch number and batch index within that epoch."""

    epoch: int = 0
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch)).permutation(n)


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
    """uint8 (N, H, W, C) -> float32 (N, S, S, channels) in [-1, 1]: channel conversion, centre
    crop to square, bicubic resize."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    x = images.astype(np.float32)
    c = x.shape[-1]
    if c == 4:  # RGBA: drop alpha
        x, c = x[..., :3], 3
    if c != channels:
        if c == 1:
            x = np.repeat(x, channels, axis=-1)
        elif c == 3 and channels == 1:
            x = x @ np.array([[0.299], [0.587], [0.114]], np.float32)
        else:
            raise ValueError(f"cannot convert {c}-channel images to {channels} channels")
    n, h, w, _ = x.shape
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[:, top:top + s, left:left + s]
    if x.shape[1] != image_size:
        x = np.stack([
            np.stack([np.asarray(Image.fromarray(img[..., k], mode="F").resize(
                (image_size, image_size), Image.Resampling.BICUBIC))
                for k in range(channels)], axis=-1)
            for img in x])
    return np.clip(x / 127.5 - 1.0, -1.0, 1.0).astype(np.float32)


class BatchIterator:
    """Yields (batch, next_position): batch = {"image": (group, local_batch, S, S, C) float32,
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
        return {"image": np.stack(images), "label": np.stack(labels)}, self.position


def prefetch(iterator: Iterator[Any], size: int) -> Iterator[Any]:
    """Run `iterator` on a daemon thread, `size` items ahead; errors re-raise in the caller."""
    if size <= 0:
        yield from iterator
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer
            q.put(e)
            return
        q.put(done)

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


def check_label_range(labels: np.ndarray, num_classes: int) -> None:
    """A conditional model (num_classes > 0) needs every label in 0..num_classes-1; an
    out-of-range label would index past its embedding (NaN) or, one-hot, vanish silently."""
    if num_classes <= 0 or labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        from genart_jax.data.sources import DataError

        raise DataError(f"the training data has label {high if high >= num_classes else low}, "
                        f"outside 0..{num_classes - 1} of model.num_classes={num_classes}; set "
                        "model.num_classes to the dataset's number of classes")


def make_input(data_cfg: Any, *, global_batch: int, seed: int, group: int = 1,
               process_index: int = 0, process_count: int = 1,
               position: Position = Position(), cached: tuple | None = None
               ) -> tuple[BatchIterator, int]:
    """The training input for a config's `data` section: (iterator, number of examples).

    `cached`: the whole split already preprocessed, (images, labels); with data.on_device the
    iterator then yields example indices in place of images ({"image": int32 indices}), for
    the batch to be gathered on the device."""
    from genart_jax.data.sources import open_source, read_examples

    size, channels = data_cfg.image_size, data_cfg.channels
    if cached is None and data_cfg.cache:
        cached = load_cached(data_cfg)
    if cached is not None:
        images, labels = cached
        n = len(images)
        on_device = data_cfg.on_device

        def fetch(idx):
            return (idx.astype(np.int32) if on_device else images[idx]), labels[idx]
    else:
        source = open_source(data_cfg.name, data_cfg.split, data_cfg.data_dir)
        n = len(source)

        def fetch(idx):
            raw, lab = read_examples(source, idx)
            return to_model_input(raw, size, channels), lab

    it = BatchIterator(fetch, n, global_batch=global_batch, seed=seed, group=group,
                       process_index=process_index, process_count=process_count,
                       position=position)
    return it, n


def load_cached(data_cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The configured split, whole, preprocessed: (images float32, labels int32)."""
    return read_split(data_cfg, data_cfg.split)


def read_split(data_cfg: Any, split: str, limit: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """A whole split (or its first `limit` examples) in file order, preprocessed like training
    data: (images float32 (N, S, S, C) in [-1, 1], labels int32 (N,))."""
    from genart_jax.data.sources import open_source, read_examples

    source = open_source(data_cfg.name, split, data_cfg.data_dir)
    n = len(source) if limit is None else min(limit, len(source))
    images, labels = read_examples(source, np.arange(n))
    return to_model_input(images, data_cfg.image_size, data_cfg.channels), labels
