"""Image size and channels by default from the prepared data.

A dataset prepared by `genart prepare folder` records its size and channels in `prepared.json`;
every command takes them from there unless the user set them: `genart train` unless
`--config.data.image_size` / `--config.data.channels` is given on its command line (a recipe's
value does not count as set: the recipes' sizes are for the embedded digits, or a default
for a folder), the other commands (`train-features`, `train-classifier`, `eval --reference`)
unless `--image-size` / `--channels` is given. A value set that disagrees with the prepared
data stays the one-line error of `pipeline.check_prepared`. Datasets without `prepared.json`
(the embedded digits, which every size is made from by resizing its 8x8 images once, and TFDS
datasets) keep the config's values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from genart_jax.data.sources import prepared_record

KEYS = (("data.image_size", "size"), ("data.channels", "channels"))


def data_shape(name: str, data_dir: str = "", image_size: int | None = None,
               channels: int | None = None, *, default: tuple[int, int] = (32, 1)
               ) -> tuple[int, int]:
    """(image size, channels) for a command on dataset `name`: each value given, else the
    prepared dataset's, else `default` (a dataset without `prepared.json`)."""
    record = None
    if image_size is None or channels is None:
        record = prepared_record(name, data_dir)
    have = (record["size"], record["channels"]) if record is not None else default
    return (have[0] if image_size is None else image_size,
            have[1] if channels is None else channels)


def prepared_overrides(data_cfg: Any, given: Iterable[str]) -> dict[str, str]:
    """The `KEY: VALUE` overrides that make a training config's data section take the size and
    channels of its prepared dataset, for the keys not in `given` (the overrides the user
    wrote); empty for a dataset without `prepared.json` or a config that already agrees."""
    record = prepared_record(data_cfg.name, data_cfg.data_dir)
    if record is None:
        return {}
    given = set(given)
    return {key: str(record[field]) for key, field in KEYS
            if key not in given and data_cfg[key.split(".")[1]] != record[field]}
