"""Reading a trained workdir back: its config and a checkpoint's state, shaped by the model
family (this lives above `genart_jax.checkpoint`, which knows no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genart_jax import checkpoint
from genart_jax.train.families import family_of


def restore_workdir(workdir: str | Path, step: int | None = None, cfg: Any = None
                    ) -> tuple[Any, Any, dict[str, Any], int]:
    """(config, host state, meta, step) of a training workdir's checkpoint `step` (default:
    the newest that restores); `cfg` if the caller has already read the workdir's config."""
    cfg = checkpoint.workdir_config(workdir) if cfg is None else cfg
    state, meta, step = checkpoint.restore(workdir, family_of(cfg).abstract_state(cfg), step)
    return cfg, state, meta, step
