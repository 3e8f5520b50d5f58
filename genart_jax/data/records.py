"""The raw-pixel record format of prepared folder datasets: one array_record record per image,
a 4-byte little-endian int32 label followed by the image's H*W*C uint8 bytes, so reading an
image costs one copy (`np.frombuffer`), no protobuf parse and no decode.

Beside the records, `prepared.json` says how the data were prepared (source, size, channels,
count, classes) and which files hold each split; it is written last, so a folder without it
was never completely prepared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from genart_jax.data.errors import DataError

RECORD = "prepared.json"
FORMAT = "genart-raw-uint8-v1"
LABEL_BYTES = 4


def encode(image: np.ndarray, label: int) -> bytes:
    """One record: int32 label (little endian), then the uint8 pixels in C order."""
    return np.int32(label).astype("<i4").tobytes() + np.ascontiguousarray(image, np.uint8).tobytes()


def write_split(path: Path, examples: Iterable[tuple[np.ndarray, int]]) -> int:
    """Write (image, label) pairs as one array_record file at `path`; returns the count."""
    from array_record.python.array_record_module import ArrayRecordWriter

    # One record per chunk, stored as is: a random read is one copy (no decompression).
    writer = ArrayRecordWriter(str(path), "group_size:1,uncompressed")
    count = 0
    try:
        for image, label in examples:
            writer.write(encode(image, label))
            count += 1
    finally:
        writer.close()
    return count


def read_record(folder: Path) -> dict[str, Any] | None:
    """The dataset's prepared.json, or None when `folder` holds no completely prepared data."""
    path = folder / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise DataError(f"{path} is format {record.get('format')!r}, not {FORMAT!r}; prepare "
                        f"the dataset again with --overwrite")
    return record


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Write prepared.json atomically (a temporary file renamed)."""
    tmp = folder / (RECORD + ".tmp")
    tmp.write_text(json.dumps(dict(record, format=FORMAT), indent=2))
    os.replace(tmp, folder / RECORD)


class RawSource:
    """Random access over one split of a raw-record dataset: `read(indices)` gives
    (images uint8 (k, S, S, C), labels int32 (k,)) with one copy; `source[i]` one example."""

    def __init__(self, folder: Path, record: dict[str, Any], split: str):
        splits = record.get("splits", {})
        if split not in splits:
            raise DataError(f"dataset '{record['name']}' has splits {sorted(splits)}, not "
                            f"'{split}'; set data.split")
        self.folder, self.split, self.record = folder, split, record
        self.shape = (record["size"], record["size"], record["channels"])
        self.nbytes = LABEL_BYTES + int(np.prod(self.shape))
        self.files = [str(folder / f) for f in splits[split]["files"]]
        self.count = int(splits[split]["count"])
        self._reader = None

    def __getstate__(self):  # picklable for worker processes: the reader is reopened there
        return dict(self.__dict__, _reader=None)

    def _source(self):
        if self._reader is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            try:
                self._reader = ArrayRecordDataSource(self.files)
            except Exception as e:  # missing or unreadable shard
                raise DataError(f"cannot open the records of '{self.record['name']}' split "
                                f"'{self.split}' ({type(e).__name__}: {e}); prepare it again "
                                f"with --overwrite") from e
            if len(self._reader) != self.count:
                raise DataError(f"'{self.record['name']}' split '{self.split}' has "
                                f"{len(self._reader)} records, its {RECORD} says {self.count}; "
                                f"prepare it again with --overwrite")
        return self._reader

    def __len__(self) -> int:
        return self.count

    def read(self, indices: np.ndarray, out: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of `indices`; the images are written into `out` (uint8
        (k, S, S, C), e.g. a shared-memory slot of a reader worker) when given, else into a new
        array."""
        keys = [int(i) for i in indices]
        try:
            blobs = self._source().__getitems__(keys)
        except DataError:
            raise
        except Exception as e:  # a truncated or corrupt shard
            raise DataError(f"cannot read records of '{self.record['name']}' split "
                            f"'{self.split}' ({type(e).__name__}: {e}); prepare it again "
                            f"with --overwrite") from e
        if any(len(b) != self.nbytes for b in blobs):
            bad = next(k for k, b in zip(keys, blobs, strict=True) if len(b) != self.nbytes)
            raise DataError(f"record {bad} of '{self.record['name']}' is not {self.nbytes} "
                            f"bytes (damaged files); prepare it again with --overwrite")
        if out is None:
            out = np.empty((len(keys), *self.shape), np.uint8)  # contiguous: one copy
        elif (out.shape != (len(keys), *self.shape) or out.dtype != np.uint8
              or not out.flags.c_contiguous):
            raise ValueError(f"out is {out.dtype} {out.shape}, not C-contiguous uint8 "
                             f"{(len(keys), *self.shape)}")
        images = out
        flat = images.reshape(len(keys), -1)  # a view: `out` is C-contiguous
        for i, blob in enumerate(blobs):
            flat[i] = np.frombuffer(blob, np.uint8, offset=LABEL_BYTES)
        labels = np.array([int.from_bytes(b[:LABEL_BYTES], "little", signed=True)
                           for b in blobs], np.int32)
        return images, labels

    def __getitem__(self, i: int) -> dict[str, Any]:
        images, labels = self.read(np.array([i]))
        return {"image": images[0], "label": int(labels[0])}
