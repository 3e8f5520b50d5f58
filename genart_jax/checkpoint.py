"""Orbax checkpoints of the training state under `WORKDIR/checkpoints/`, with a JSON record
(config, data position) beside each saved state."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged-checkpoints"  # where damaged checkpoints are moved, never deleted


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for."""


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / CHECKPOINT_DIR


def manager(workdir: str | Path, max_to_keep: int = 3, async_save: bool = False,
            writer: bool = False) -> ocp.CheckpointManager:
    """A manager over WORKDIR/checkpoints; only a `writer` (the training run, which holds the
    workdir lock) creates the folder and clears the temporary folders of unfinished saves."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=writer,
                                           cleanup_tmp_directories=writer,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def intact_steps(workdir: str | Path) -> list[int]:
    """Steps of the complete checkpoints on disk (an unfinished save has a temporary name)."""
    where = checkpoint_dir(workdir)
    return sorted(int(p.name) for p in where.iterdir() if p.name.isdigit()) if where.is_dir() \
        else []


def describe_intact(workdir: str | Path) -> str:
    """What a fault leaves: the complete checkpoints, for the one-line error."""
    steps = intact_steps(workdir)
    if not steps:
        return f"no checkpoint yet in {checkpoint_dir(workdir)}"
    return (f"checkpoints {', '.join(map(str, steps))} in {checkpoint_dir(workdir)} (a resume "
            f"starts from {steps[-1]}; the unfinished save is discarded)")


class Checkpointer:
    """The checkpoints of one training run. A save writes into a temporary folder that is
    renamed when complete, so a run killed at any moment leaves only complete checkpoints;
    with `async_save` the writing overlaps the next training steps."""

    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
        self.workdir = Path(workdir)
        self._mngr = manager(workdir, keep, async_save, writer=True)

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


def latest_step(workdir: str | Path) -> int | None:
    if not checkpoint_dir(workdir).is_dir():
        return None
    with manager(workdir) as mngr:
        return mngr.latest_step()


class CheckpointDamaged(CheckpointError):
    """A checkpoint whose files cannot be read back (truncated, partly deleted, garbled)."""

    def __init__(self, step: int, path: Path, cause: BaseException):
        super().__init__(f"checkpoint {step} ({path}) is damaged: {_one_line(cause)}")
        self.step, self.path, self.cause = step, path, cause


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def _leaf_key(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def tree_shapes(tree: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
    """{"a/b/c": (shape, dtype)} of a pytree's leaves, whatever its node types."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_leaf_key(k) for k in path): (tuple(x.shape), str(np.dtype(x.dtype)))
            for path, x in flat}


def shape_differences(saved: dict, wanted: dict) -> list[str]:
    """Human-readable differences between two `tree_shapes` maps (empty if they agree)."""
    out = [f"{k}: only in the checkpoint" for k in sorted(set(saved) - set(wanted))]
    out += [f"{k}: missing from the checkpoint" for k in sorted(set(wanted) - set(saved))]
    out += [f"{k}: saved {saved[k][0]} {saved[k][1]}, this model {wanted[k][0]} {wanted[k][1]}"
            for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
    return out


def _saved_shapes(step_dir: Path) -> dict:
    """The state's shapes recorded in a checkpoint's metadata (raises if unreadable)."""
    import logging

    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # Orbax warns about an optional file it never wrote
    try:
        with ocp.StandardCheckpointer() as c:
            md = c.metadata(step_dir / "state")
    finally:
        absl_log.setLevel(level)
    tree = getattr(md, "item_metadata", md)
    if tree is None:
        raise ValueError("its state metadata cannot be read")
    return tree_shapes(tree)


def _restore_step(mngr: ocp.CheckpointManager, step: int, step_dir: Path, target: PyTree,
                  check: Callable[[dict[str, Any]], None] | None
                  ) -> tuple[PyTree, dict[str, Any]]:
    """Restore one step; CheckpointDamaged when its files are unreadable, CheckpointError when
    they are intact but hold another model's state (with the differing leaves)."""
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict):
            raise ValueError("its meta record is not a JSON object")
    except Exception as e:  # noqa: BLE001 - any read failure of the record means damage
        raise CheckpointDamaged(step, step_dir, e) from e
    if check is not None:
        check(meta)  # e.g. the saved config against this one: raises its own clear error
    wanted = tree_shapes(target)
    try:
        saved = _saved_shapes(step_dir)
    except Exception as e:  # noqa: BLE001
        raise CheckpointDamaged(step, step_dir, e) from e
    diff = shape_differences(saved, wanted)
    if diff:
        shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise CheckpointError(
            f"checkpoint {step} in {step_dir.parent} does not match this model: it holds "
            f"another model's state (written by another model or config?). Differing leaves: "
            f"{shown}")
    abstract = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), target)
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - shapes agree, so a failure here is damage
        raise CheckpointDamaged(step, step_dir, e) from e
    return restored["state"], meta


def restore(workdir: str | Path, target: PyTree, step: int | None = None, *,
            check: Callable[[dict[str, Any]], None] | None = None,
            on_damaged: Callable[[CheckpointDamaged], None] | None = None
            ) -> tuple[PyTree, dict[str, Any], int]:
    """(state, meta, step) of checkpoint `step` as host arrays shaped like `target` (a pytree
    of arrays or `jax.ShapeDtypeStruct`). Without `step`: the newest checkpoint that restores;
    each damaged newer one is passed to `on_damaged` (default: a warning line) and skipped.
    `check(meta)` runs before the state is read (e.g. to compare the saved config)."""
    where = checkpoint_dir(workdir)
    missing = CheckpointError(f"no checkpoint in {where}; train first with "
                              f"`genart train --workdir {workdir}`")
    if not where.is_dir():  # checked first: a manager would create it
        raise missing
    with manager(workdir) as mngr:
        available = sorted(mngr.all_steps(), reverse=True)
        if not available:
            raise missing
        if step is not None and step not in available:
            raise CheckpointError(f"no checkpoint for step {step} in {where}; available "
                                  f"steps: {sorted(available)}")
        damaged: list[CheckpointDamaged] = []
        for s in [step] if step is not None else available:
            try:
                state, meta = _restore_step(mngr, s, where / str(s), target, check)
                return state, meta, s
            except CheckpointDamaged as e:
                if step is not None:
                    raise
                damaged.append(e)
                (on_damaged or _warn_damaged)(e)
    raise CheckpointError(f"every checkpoint in {where} is damaged "
                          f"({', '.join(str(d.step) for d in damaged)}); the newest: "
                          f"{damaged[0]}. Start over with --no-resume (they are kept aside)")


def _warn_damaged(e: CheckpointDamaged) -> None:
    print(f"genart: warning: {e}; trying the next older one", file=sys.stderr, flush=True)


def move_aside_damaged(workdir: str | Path, damaged: list[CheckpointDamaged]) -> Path | None:
    """Move damaged checkpoint folders to WORKDIR/damaged-checkpoints/STEP-TIME/ (never
    deleted), with the error beside each in reason.txt; returns that parent folder."""
    if not damaged:
        return None
    dest_root = Path(workdir).resolve() / DAMAGED_DIR
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for d in damaged:
        if not d.path.exists():
            continue
        dest = dest_root / f"{d.step}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(d.path), str(dest))
        (dest / "reason.txt").write_text(str(d) + "\n")
    return dest_root


def workdir_config(workdir: str | Path) -> Any:
    """The resolved config (ml_collections.ConfigDict) a training run wrote to
    WORKDIR/config.json."""
    from genart_jax.config import from_json

    config_file = Path(workdir) / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{workdir} has no config.json: is it a genart_jax workdir? Train "
                              f"with `genart train --workdir {workdir}` first")
    return from_json(config_file.read_text())
