"""The training loop: config -> data -> sharded batch -> step -> metrics / samples / checkpoint.

`train_and_evaluate(config, workdir)` is the library entry point (the CLI and notebooks call
it). It knows nothing of a model's insides: it builds the pieces from the config and drives them.
A workdir with checkpoints is resumed exactly: weights, optimizer and BatchNorm states, EMA,
step, RNG key and the data position all come back, so the run continues as if never stopped.

Here: the start (restore or init, the input, the output files) and the driver, which runs the
compiled calls and asks the periodic actions of `train/actions.py` (log, NaN policy, save,
timed save, the multi-process stop/save agreement, samples) at every call end.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
from tqdm.auto import tqdm

from genart_jax import checkpoint
from genart_jax.config import flatten, to_json
from genart_jax.data import Position, check_label_range, make_input, prefetch
from genart_jax.data.pipeline import (
    decide_on_device,
    describe_input,
    device_memory_bytes,
    load_cached,
)
from genart_jax.parallel import (
    announce_preemption,
    any_process,
    describe_devices,
    preemption_sync,
    preemption_sync_available,
)
from genart_jax.train.actions import (
    InFlight,
    LogMetrics,
    MetricsWriter,
    NonfinitePolicy,
    SaveCheckpoint,
    StopAgreement,
    Throughput,
    TimedSave,
    TrainingDiverged,
    WriteSamples,
    real_images,
)
from genart_jax.train.families import family_of
from genart_jax.train.feed import (
    CALLS_AHEAD,
    DriverPerSize,
    call_sizes,
    feed,
    resolve_steps_per_call,
)
from genart_jax.train.preemption import PreemptionGuard
from genart_jax.train.tensorboard_log import LOG_DIR, TensorBoardWriter
from genart_jax.workdir_lock import WorkdirLock

__all__ = ["CALLS_AHEAD", "MetricsWriter", "Preempted", "TrainingDiverged", "abstract_state",
           "build_training", "check_resumable", "train_and_evaluate"]


class Preempted(RuntimeError):
    """The run was asked to stop by a signal; a checkpoint of the last step was written."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"stopped by signal {signum} after step {step}; checkpoint {path}; "
                         f"run the same command again to resume")
        self.signum = signum


def build_training(cfg: ml_collections.ConfigDict, devices=None, steps_per_call: int = 1):
    """(driver, init_fn) for a config of any family; `steps_per_call` > 1 fuses that many
    steps into one compiled call (batches stacked on a leading axis)."""
    return family_of(cfg).build_training(cfg, devices, steps_per_call)


def abstract_state(cfg: ml_collections.ConfigDict) -> Any:
    """Shapes and dtypes of a config's state, without computing it."""
    return family_of(cfg).abstract_state(cfg)


def check_resumable(saved: dict[str, Any], cfg: ml_collections.ConfigDict, where: Path) -> None:
    """A clear error when the saved run's state has other shapes than this config's."""
    from genart_jax.config import from_dict

    saved_cfg = from_dict(saved)  # a run saved by an older version too
    shapes = checkpoint.tree_shapes
    if shapes(abstract_state(saved_cfg)) == shapes(abstract_state(cfg)):
        return
    old, new = flatten(saved_cfg), flatten(cfg)
    diff = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(new) if old.get(k) != new[k]]
    raise checkpoint.CheckpointError(
        f"the checkpoints in {where} belong to a run whose model state has other shapes than "
        f"this config's. Differing keys: {'; '.join(diff)}. Use the saved values, another "
        f"--workdir, or --no-resume to start over (the old run is moved aside, not deleted)")


def _move_aside(workdir: Path) -> Path | None:
    """Move a previous run's checkpoints, metrics, samples and TensorBoard events into
    workdir/replaced-TIME/."""
    olds = [workdir / n for n in (checkpoint.CHECKPOINT_DIR, "metrics.jsonl", "samples",
                                  LOG_DIR)]
    olds = [p for p in olds if p.exists()]
    if not olds:
        return None
    dest = workdir / time.strftime("replaced-%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for p in olds:
        shutil.move(str(p), str(dest / p.name))
    return dest


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | Path, *,
                       progress: bool = True, devices=None, resume: bool = True
                       ) -> dict[str, Any]:
    """Train the model of `cfg` up to `cfg.train.steps` iterations, writing into `workdir`:
    config.json, metrics.jsonl, samples/*.png, tensorboard/ (event files) and checkpoints/.
    Resumes from the newest checkpoint there that restores unless `resume=False` (which moves
    the old run aside).
    Holds the workdir's lock throughout (a second run stops at once). Returns a summary.
    """
    with WorkdirLock(workdir, enabled=jax.process_index() == 0):
        return _train_and_evaluate(cfg, workdir, progress=progress, devices=devices,
                                   resume=resume)


def _train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | Path, *,
                        progress: bool, devices, resume: bool) -> dict[str, Any]:
    workdir, main, steps = Path(workdir), jax.process_index() == 0, cfg.train.steps
    t_start = time.perf_counter()
    print(describe_devices(), flush=True)  # every process: which devices it found
    log = _say if main else _quiet  # everything else from process 0 only
    family = family_of(cfg)
    periods = (cfg.train.log_every, cfg.train.sample_every, cfg.checkpoint.every_steps)
    k = resolve_steps_per_call(cfg.train.steps_per_call, periods=periods)
    driver, init_fn = family.build_training(cfg, devices, k)
    drivers = DriverPerSize(lambda n: family.build_training(cfg, devices, n)[0], driver, k)
    writer = MetricsWriter(workdir / "metrics.jsonl", enabled=main)
    state, position, start = _start(cfg, workdir, driver, init_fn, writer, resume=resume,
                                    main=main, log=log)
    # The manager is made after the restore: it lists the steps once, and damaged ones left.
    ckpt = checkpoint.Checkpointer(workdir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
    iterator, num_examples, on_device, resident = _input(cfg, family, driver, drivers, position,
                                                         devices, log)
    tb = _outputs(cfg, workdir, start, main, log)
    log(f"Training {cfg.model.arch} {cfg.model.family.upper()} on {cfg.data.name} "
        f"({num_examples} images, "
        f"{cfg.data.image_size}x{cfg.data.image_size}x{cfg.data.channels}) from step {start} "
        f"to {steps}, global batch {cfg.train.batch_size} over {driver.num_devices} "
        f"device(s), driver {driver.name}, {k} step(s) per call; writing to {workdir}")

    nonfinite = NonfinitePolicy(cfg.train.nonfinite, driver.get_state)
    save = SaveCheckpoint(ckpt, cfg, cfg.checkpoint.every_steps, nonfinite)
    sample = WriteSamples(cfg, family.write_samples, workdir / "samples", tb,
                          cfg.train.sample_every, steps, enabled=main)
    real, last, in_flight = None, {}, InFlight()  # real: a few images, for reconstructions
    calls = feed(prefetch(iterator, cfg.data.prefetch), call_sizes(start, steps, k, periods),
                 lambda n, batch: drivers(n).put_batch(batch),
                 check=lambda batch: check_label_range(batch["label"], cfg.model.num_classes))
    bar = tqdm(total=steps, initial=start, disable=not (progress and main), unit="step",
               dynamic_ncols=True)
    timer = TimedSave(cfg.checkpoint.every_minutes)
    throughput = Throughput(start, cfg.train.batch_size * family.batches_per_step(cfg))
    log_metrics = LogMetrics(cfg.train.log_every, steps, writer, tb, bar, family.progress,
                             throughput)
    # Multi-process: a signal to any process is announced to all (JAX's preemption sync
    # manager), and all save at the same call end, checked at every call (a local flag).
    sync = jax.process_count() > 1 and preemption_sync_available()
    agreement = StopAgreement(jax.process_count(), preemption_sync if sync else None,
                              any_process)
    try:
        with PreemptionGuard(on_signal=announce_preemption if sync else None) as guard:
            step = start
            for n_call, call in enumerate(calls, 1):  # calls end at logged, sampled, saved steps
                position = call.position
                if real is None:
                    real = real_images(call.first, resident)
                state, metrics = drivers(call.steps).step(
                    state, on_device(call.steps, call.batch))
                in_flight.launched(metrics)
                step += call.steps
                guard.step = step
                if n_call == 1:  # the first call compiles; not throughput
                    jax.block_until_ready(metrics)
                    throughput.compiled(step)
                logged = log_metrics.due(step)
                if logged:
                    last = drivers(call.steps).get_metrics(metrics)
                    log_metrics(step, last, position.epoch)
                    nonfinite.check_logged(last, state)
                bar.update(call.steps)
                stop, timed = agreement.decide(n_call, logged, guard.signum is not None,
                                               timer.due())
                do_save, do_sample = stop or timed or save.due(step), sample.due(step)
                if not (do_save or do_sample):
                    continue
                jax.block_until_ready(state)
                with throughput.aside():  # saves and grids are not training time
                    host_state = driver.get_state(state)  # one host copy for save and grid
                    if do_save:
                        path = save(step, host_state, position)
                        timer.saved()
                        if stop:
                            save.close()
                            raise Preempted(guard.signum or signal.SIGTERM, step, path)
                    if do_sample:
                        sample(step, host_state, real)
    except BaseException:
        save.close()  # a checkpoint already in flight still completes
        tb.close()
        raise
    finally:
        bar.close()
        calls.close()

    host_state = driver.get_state(state)
    path = save.final(host_state, position)
    grids = sample.final(int(host_state.step), host_state, real)
    tb.close()
    grid = grids[0] if grids else None
    wall, compile_s = time.perf_counter() - t_start, throughput.compile_s
    summary = {"steps": int(host_state.step), "metrics": last, "compile_s": compile_s,
               "wall_s": wall, "checkpoint": str(path), "samples": str(grid)}
    shown = ", ".join(f"{k} {last[k]:.4f}" for k in family.progress if k in last)
    log(f"Done: step {summary['steps']} in {wall:.1f} s (first step incl. compile "
        f"{compile_s:.1f} s); final {shown}; samples {grid}; checkpoint {path}")
    return summary


def _outputs(cfg: ml_collections.ConfigDict, workdir: Path, start: int, main: bool,
             log: Any) -> TensorBoardWriter:
    """config.json, samples/ and the TensorBoard writer of a run segment from `start`, on
    process 0: events past `start` (a killed run's) are dropped first, as in metrics.jsonl, and
    each segment writes a new event file starting with the config."""
    if main:
        (workdir / "samples").mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(to_json(cfg))
    tb = TensorBoardWriter(workdir / LOG_DIR, start=start, enabled=main and cfg.train.tensorboard,
                           log=log)
    tb.config(start, to_json(cfg))
    return tb


def _start(cfg: ml_collections.ConfigDict, workdir: Path, driver: Any, init_fn: Any,
           writer: MetricsWriter, *, resume: bool, main: bool, log: Any
           ) -> tuple[Any, Position, int]:
    """(state, data position, step) to train from: the newest checkpoint in `workdir` that
    restores (damaged ones moved aside, metrics.jsonl cut back to it), or a fresh state; with
    `resume=False` the previous run is moved aside first."""
    if not resume and main:
        moved = _move_aside(workdir)
        if moved:
            log(f"--no-resume: moved the previous run to {moved}")
    _barrier("genart_no_resume")  # every process sees the moved-aside workdir
    latest = checkpoint.latest_step(workdir) if resume else None
    if latest is None:
        return driver.init_state(init_fn, jax.random.PRNGKey(cfg.seed)), Position(), 0
    damaged: list[checkpoint.CheckpointDamaged] = []
    host, meta, latest = checkpoint.restore(
        workdir, abstract_state(cfg), on_damaged=damaged.append,
        check=lambda m: check_resumable(m["config"], cfg, checkpoint.checkpoint_dir(workdir)))
    _barrier("genart_restored")  # all have read before process 0 moves damaged ones
    if damaged and main:
        aside = checkpoint.move_aside_damaged(workdir, damaged)
        for d in damaged:
            log(f"genart: warning: {d}; moved to {aside} (kept, not deleted)")
    _barrier("genart_moved_damaged")
    state, position = driver.put_state(host), Position(**meta["data_position"])
    writer.truncate_after(latest)
    log(f"Resuming from checkpoint {latest} (data epoch {position.epoch}, batch "
        f"{position.batch})")
    return state, position, latest or 0


def _input(cfg: ml_collections.ConfigDict, family: Any, driver: Any, drivers: DriverPerSize,
           position: Position, devices, log: Any) -> tuple[Any, int, Any, Any]:
    """(host batches from `position`, number of examples, `on_device(steps, placed)` run on
    each placed call, the split resident on the devices or None). Where the cached split fits
    on the devices (`data.on_device`) it lives there and batches are indices gathered there."""
    cached = load_cached(cfg.data) if cfg.data.cache else None
    resident_data, why = decide_on_device(
        cfg.data.on_device, None if cached is None else cached[0].nbytes,
        device_memory_bytes(devices), cfg.data.on_device_fraction, driver=cfg.train.driver)
    iterator, num_examples = make_input(
        cfg.data, global_batch=cfg.train.batch_size, seed=cfg.seed,
        group=family.batches_per_step(cfg),
        process_index=jax.process_index(), process_count=jax.process_count(),
        position=position, cached=cached, on_device=resident_data)
    log(describe_input(cfg.data, iterator, num_examples, cached, (resident_data, why)))
    if not resident_data:
        return iterator, num_examples, lambda n, placed: placed, None
    resident = driver.put_dataset(cached[0])
    return (iterator, num_examples,
            lambda n, placed: drivers(n).gather_placed(resident, placed), cached[0])


def _say(text: str) -> None:
    print(text, flush=True)


def _quiet(text: str) -> None:
    del text


def _barrier(name: str) -> None:
    """Wait for every process of a multi-process run (nothing to wait for alone)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
