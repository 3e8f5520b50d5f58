"""Export of a trained generator alone, for sharing an art model without its training state.

Two files: `NAME.msgpack` (Flax msgpack of the generator's params and BatchNorm statistics,
arrays only, no pickle) and `NAME.json` beside it (format tag, step, full config).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np

from genart_jax.config import from_json, to_json

FORMAT = "genart_jax.generator.v1"
PyTree = Any


class ExportError(ValueError):
    """A file that is not a genart_jax generator export."""


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def export_generator(cfg: ml_collections.ConfigDict, state: Any, path: str | Path, *,
                     step: int, use_ema: bool = True) -> Path:
    """Write the generator that `genart sample` would use (for a GAN: the EMA weights with
    recalibrated BatchNorm statistics by default; for a VAE: encoder and decoder, so that
    reconstructions work too) to `path` (.msgpack) and its config beside it (.json)."""
    path = Path(path)
    if path.suffix != ".msgpack":
        raise ExportError(f"export file must end in .msgpack, got {path.name}")
    from genart_jax.train.families import family_of

    params, stats, use_ema = family_of(cfg).variables(cfg, state, use_ema)
    tree = {"params": jax.tree.map(np.asarray, params),
            "batch_stats": jax.tree.map(np.asarray, stats)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flax.serialization.msgpack_serialize(tree))
    meta = {"format": FORMAT, "step": step, "ema": use_ema, "config": json.loads(to_json(cfg))}
    sidecar(path).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load_generator(path: str | Path) -> tuple[ml_collections.ConfigDict, PyTree, PyTree, dict]:
    """(config, params, batch_stats, meta) of an export written by `export_generator`."""
    path = Path(path)
    if not path.is_file() or not sidecar(path).is_file():
        raise ExportError(f"{path} and {sidecar(path).name} beside it are both needed; write "
                          f"them with `genart export --workdir DIR --out {path.name}`")
    meta = json.loads(sidecar(path).read_text())
    if meta.get("format") != FORMAT:
        raise ExportError(f"{sidecar(path)} is not a {FORMAT} export")
    cfg = from_json(json.dumps(meta["config"]))
    try:
        tree = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as e:
        raise ExportError(f"{path} is not a readable msgpack export: {e}") from e
    return cfg, tree["params"], tree.get("batch_stats", {}) or {}, meta
