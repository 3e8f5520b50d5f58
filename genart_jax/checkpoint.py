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


def manager(workdir: str | Path, max_to_keep: int = 3, async_save: bool = False
            ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


class Checkpointer:
    """The checkpoints of one training run. A save writes into a temporary folder that is
    renamed when complete, so a run killed at any moment leaves only complete checkpoints;
    with `async_save` the writing overlaps the next training steps."""

    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
        self.workdir = Path(workdir)
        self._mngr = manager(workdir, keep, async_save)

    def save(self, step: int, state: PyTree, meta: dict[str, Any]) -> Path:
        """Save host arrays `state` and JSON `meta` as checkpoint `step` (all processes)."""
        self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)),
                        force=True)
        return checkpoint_dir(self.workdir) / str(step)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Wait for saves in flight, then release the manager (safe to call twice)."""
        if self._mngr is not None:
            self._mngr.wait_until_finished()
            self._mngr.close()
            self._mngr = None


def save(workdir: str | Path, step: int, state: PyTree, meta: dict[str, Any]) -> Path:
    """Save one checkpoint and wait until it is complete on disk."""
    ckpt = Checkpointer(workdir, async_save=False)
    try:
        return ckpt.save(step, state, meta)
    finally:
        ckpt.close()


def restore_meta(workdir: str | Path, step: int) -> dict[str, Any]:
    """The JSON record (config, data position) saved with checkpoint `step`."""
    with manager(workdir) as mngr:
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def latest_step(workdir: str | Path) -> int | None:
    if not checkpoint_dir(workdir).is_dir():
        return None
    with manager(workdir) as mngr:
        return mngr.latest_step()


def restore(workdir: str | Path, target: PyTree, step: int | None = None
            ) -> tuple[PyTree, dict[str, Any], int]:
    """(state, meta, step) of checkpoint `step` (default: the latest) as host arrays shaped like
    `target` (a pytree of arrays or `jax.ShapeDtypeStruct`)."""
    missing = CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}; train first with "
                              f"`genart train --workdir {workdir}`")
    if not checkpoint_dir(workdir).is_dir():  # checked first: a manager would create it
        raise missing
    with manager(workdir) as mngr:
        available = list(mngr.all_steps())
        if not available:
            raise missing
        step = max(available) if step is None else step
        if step not in available:
            raise CheckpointError(f"no checkpoint for step {step} in "
                                  f"{checkpoint_dir(workdir)}; available steps: "
                                  f"{sorted(available)}")
        abstract = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), target)
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {step} in {checkpoint_dir(workdir)} does not match this model "
                f"(was it written by another model or config?): {e}") from e
    return restored["state"], restored["meta"], step


def workdir_config(workdir: str | Path) -> Any:
    """The resolved config (ml_collections.ConfigDict) a training run wrote to
    WORKDIR/config.json."""
    from genart_jax.config import from_json

    config_file = Path(workdir) / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{workdir} has no config.json: is it a genart_jax workdir? Train "
                              f"with `genart train --workdir {workdir}` first")
    return from_json(config_file.read_text())


def restore_workdir(workdir: str | Path, step: int | None = None, cfg: Any = None
                    ) -> tuple[Any, PyTree, dict[str, Any], int]:
    """(config, host state, meta, step) of a training workdir's checkpoint `step` (default:
    the latest); `cfg` if the caller has already read the workdir's config."""
    from genart_jax.train import abstract_state

    cfg = workdir_config(workdir) if cfg is None else cfg
    state, meta, step = restore(workdir, abstract_state(cfg), step)
    return cfg, state, meta, step
