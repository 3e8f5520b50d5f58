"""Random-access data sources: the embedded `digits` builder, or any prepared TFDS dataset.

Reading goes through `tfds.data_source` over array_record files and never needs TensorFlow.
The embedded dataset is prepared on first use (under a file lock, so concurrent processes of one
run do not race); a standard TFDS dataset that is not prepared is a clear error saying how.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genart_jax.data.errors import DataError
from genart_jax.data.records import RawSource, read_record

EMBEDDED = ("digits",)


def resolve_data_dir(data_dir: str = "") -> Path:
    """`data_dir` if given, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    if data_dir:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _embedded_builder(name: str, data_dir: Path):
    from genart_jax.data.digits import Digits

    builders = {"digits": Digits}
    # Built inside the lock: a builder reads the dataset's info when constructed, so one made
    # while another process is still preparing would see no splits.
    with _file_lock(data_dir / f".{name}.lock"), _quiet_tfds():
        builder = builders[name](data_dir=str(data_dir), file_format="array_record")
        if not builder.is_prepared():
            print(f"Preparing the embedded dataset '{name}' into {data_dir} (once, from files "
                  f"already on this machine; nothing is downloaded) ...", flush=True)
            builder.download_and_prepare(file_format="array_record")
    return builder


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """No TFDS progress bars or absl warnings (about a folder not yet prepared) while the
    embedded dataset is opened or prepared: our one line above says what happens."""
    import logging

    from absl import logging as absl_logging
    from tensorflow_datasets.core.utils import tqdm_utils

    log = absl_logging.get_absl_logger()
    level = log.level
    log.setLevel(logging.ERROR)
    tqdm_utils.display_progress_bar(False)
    try:
        yield
    finally:
        tqdm_utils.display_progress_bar(True)
        log.setLevel(level)


def tfds_builder(name: str, root: Path):
    """The TFDS builder of a standard dataset; an unknown name is a DataError."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=str(root))
    except Exception as e:  # DatasetNotFoundError and friends
        raise DataError(f"unknown TFDS dataset '{name}': {e}") from e


def prepared_record(name: str, data_dir: str = "") -> dict[str, Any] | None:
    """The `prepared.json` of dataset `name` (prepared by `genart prepare folder`) under the data
    dir, or None: the embedded digits, a TFDS dataset, or nothing prepared under that name."""
    return read_record(resolve_data_dir(data_dir) / name)


def open_source(name: str, split: str, data_dir: str = "") -> Sequence[dict[str, Any]]:
    """A random-access sequence of examples {"image": uint8 (H, W, C), "label": int, ...}."""

    root = resolve_data_dir(data_dir)
    record = prepared_record(name, data_dir)
    if record is not None:  # prepared by `genart prepare folder`: raw uint8 records
        return RawSource(root / name, record, split)
    if name in EMBEDDED:
        builder = _embedded_builder(name, root)
        if split not in builder.info.splits:
            raise DataError(f"dataset '{name}' has splits {sorted(builder.info.splits)}, "
                            f"not '{split}'; set data.split")
        return builder.as_data_source(split=split)
    how = (f"Prepare it once, on a machine with network access: pip install -e \".[prepare]\" "
           f"&& genart prepare {name} --data_dir {root} (or prepare it elsewhere and point "
           f"data.data_dir / $TFDS_DATA_DIR at that folder); for your own images use `genart "
           f"prepare folder PATH --name NAME`. The embedded dataset needs none of this: "
           f"data.name=digits.")
    builder = tfds_builder(name, root)
    try:
        return builder.as_data_source(split=split)
    except Exception as e:  # not prepared, prepared in another file format, unknown split...
        if not builder.is_prepared():
            raise DataError(f"TFDS dataset '{name}' is not prepared under {root}. {how}") from e
        raise DataError(f"cannot read TFDS dataset '{name}' split '{split}' from {root} "
                        f"({type(e).__name__}: {e}). It must be prepared as array_record "
                        f"and have that split. {how}") from e


def read_examples(source: Sequence[dict[str, Any]], indices: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (k, H, W, C), labels int32 (k,)) for `indices` of `source`."""
    if hasattr(source, "read"):  # a RawSource: one copy of the records' bytes
        return source.read(indices)
    keys = [int(i) for i in indices]
    getitems = getattr(source, "__getitems__", None)
    try:
        records = getitems(keys) if getitems else [source[k] for k in keys]
    except (RuntimeError, OSError) as e:  # array_record's reader on a truncated/garbled shard
        info = getattr(source, "dataset_info", None)
        where = getattr(info, "data_dir", None) or "the prepared dataset"
        raise DataError(f"cannot read examples from {where}: {' '.join(str(e).split())[:200]}. "
                        f"Its files are damaged or incomplete: move that folder aside and "
                        f"prepare it again (the embedded digits are rebuilt by themselves)"
                        ) from e
    images = []
    for r in records:
        img = np.asarray(r["image"])
        images.append(img[..., None] if img.ndim == 2 else img)
    labels = np.array([int(r.get("label", -1)) for r in records], np.int32)
    shapes = sorted({img.shape for img in images})
    if len(shapes) > 1:
        shown = ", ".join(map(str, shapes[:4]))
        raise DataError(f"the dataset's images have several sizes ({shown}"
                        f"{', ...' if len(shapes) > 4 else ''}); the pipeline needs one size: "
                        f"export them to a folder and use `genart prepare folder PATH --name "
                        f"NAME --size S`, which resizes")
    return np.stack(images), labels
