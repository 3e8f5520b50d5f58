"""Data: the embedded digits builder, TFDS sources and the input pipeline."""

from genart_jax.data.pipeline import (
    BatchIterator,
    Position,
    check_label_range,
    make_input,
    prefetch,
    process_indices,
    read_split,
    to_model_input,
)
from genart_jax.data.sources import DataError, open_source, resolve_data_dir

__all__ = [
    "BatchIterator", "DataError", "Position", "check_label_range", "make_input", "open_source",
    "prefetch", "process_indices", "read_split", "resolve_data_dir", "to_model_input",
]
