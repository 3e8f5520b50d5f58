"""`genart prepare NAME`: a standard TFDS dataset to array_record, once. Preparing needs
TensorFlow (the `prepare` extra) and usually the network; reading afterwards needs neither."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from genart_jax.data.sources import DataError, resolve_data_dir, tfds_builder

NETWORK_HINTS = ("network", "connection", "resolve", "unreachable", "timed out", "download",
                 "urlopen", "ssl", "http")


def _download_and_prepare(builder, manual_dir: str | None) -> None:
    import tensorflow_datasets as tfds

    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(file_format="array_record", download_config=config)


def prepare_tfds(name: str, data_dir: str = "", manual_dir: str | None = None) -> Path:
    """Download (or take from `manual_dir`) and prepare TFDS dataset `name` as array_record."""
    root = resolve_data_dir(data_dir)
    if importlib.util.find_spec("tensorflow") is None:
        raise DataError(
            f"preparing the TFDS dataset '{name}' needs TensorFlow, which is not installed: "
            f"pip install -e \".[prepare]\" (about 1.6 GB; only preparing needs it, training "
            f"reads the prepared files without it). Your own images need no TensorFlow: "
            f"genart prepare folder PATH --name NAME")
    builder = tfds_builder(name, root)
    if builder.is_prepared():
        print(f"{name} is already prepared in {root}; nothing to do")
        return root
    try:
        _download_and_prepare(builder, manual_dir)
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
        if any(h in text.lower() for h in NETWORK_HINTS):
            raise DataError(
                f"could not download '{name}' ({text}). Without network access, fetch the "
                f"dataset's files on a machine that has it (see the dataset's page in the TFDS "
                f"catalog for which files), put them in a folder and run: genart prepare "
                f"{name} --manual-dir FOLDER --data_dir {root}") from e
        raise DataError(f"preparing '{name}' failed: {text}") from e
    print(f"Prepared {name} as array_record in {root}")
    return root
