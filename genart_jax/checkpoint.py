"""Orbax checkpoints of the training state under `WORKDIR/checkpoints/`, with a JSON record
(config, data position) beside each saved state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for."""


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / CHECKPOINT_DIR


def manager(workdir: str | Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(workdir: str | Path, step: int, state: PyTree, meta: dict[str, Any]) -> Path:
    """Save `state` (all processes call this) and `meta` (JSON) as checkpoint `step`; blocks
    until the checkpoint is complete on disk."""
    with manager(workdir) as mngr:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)), force=True)
        mngr.wait_until_finished()
    return checkpoint_dir(workdir) / str(step)


def latest_step(workdir: str | Path) -> int | None:
    if not checkpoint_dir(workdir).is_dir():
        return None
    with manager(workdir) as mngr:
        return mngr.latest_step()


def restore(workdir: str | Path, target: PyTree, step: int | None = None
            ) -> tuple[PyTree, dict[str, Any], int]:
    """(state, meta, step) of checkpoint `step` (default: the latest) as host arrays shaped like
    `target` (a pytree of arrays or `jax.ShapeDtypeStruct`)."""
    available = []
    if checkpoint_dir(workdir).is_dir():
        with manager(workdir) as mngr:
            available = list(mngr.all_steps())
    if not available:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}; train first with "
                              f"`genart train --workdir {workdir}`")
    step = max(available) if step is None else step
    if step not in available:
        raise CheckpointError(f"no checkpoint for step {step} in {checkpoint_dir(workdir)}; "
                              f"available steps: {sorted(available)}")
    abstract = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), target)
    with manager(workdir) as mngr:
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {step} in {checkpoint_dir(workdir)} does not match this model "
                f"(was it written by another model or config?): {e}") from e
    return restored["state"], restored["meta"], step
