"""The training loop: config -> data -> sharded batch -> step -> metrics / samples / checkpoint.

`train_and_evaluate(config, workdir)` is the library entry point (the CLI and notebooks call
it). It knows nothing of a model's insides: it builds the pieces from the config and drives them.
A workdir with checkpoints is resumed exactly: weights, optimizer and BatchNorm states, EMA,
step, RNG key and the data position all come back, so the run continues as if never stopped.
"""

from __future__ import annotations

import collections
import json
import math
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
from tqdm.auto import tqdm

from genart_jax import checkpoint, history
from genart_jax.config import flatten, to_json
from genart_jax.data import Position, check_label_range, make_input, prefetch
from genart_jax.data.convert import to_model_range_np
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
from genart_jax.train.families import family_of
from genart_jax.train.feed import DriverPerSize, call_sizes, feed, resolve_steps_per_call
from genart_jax.train.preemption import PreemptionGuard
from genart_jax.train.tensorboard_log import LOG_DIR, TensorBoardWriter
from genart_jax.workdir_lock import WorkdirLock

# The host runs at most this many calls ahead of the devices: after launching call n it waits
# for call n - CALLS_AHEAD, so the devices always have queued work while the host's memory of
# placed batches and the distance between the step a signal names and the step that runs stay
# bounded. Without a bound, a loop that reads no result between logged steps queues calls
# without limit, and two CPU processes over gloo hang in the step's collectives after a few
# hundred queued calls (`genart train` of the floor's MLP GAN, log_every=96: hung at step
# 96-192 in 3 of 3 runs unbounded, finished in 3 of 3 bounded; benchmarks/results/
# cpu-2core-calls-ahead).
CALLS_AHEAD = 2


class TrainingDiverged(RuntimeError):
    """A loss or gradient norm became NaN or infinite (with train.nonfinite=stop)."""


class Preempted(RuntimeError):
    """The run was asked to stop by a signal; a checkpoint of the last step was written."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"stopped by signal {signum} after step {step}; checkpoint {path}; "
                         f"run the same command again to resume")
        self.signum = signum


class MetricsWriter:
    """Appends one JSON object per logged step to `metrics.jsonl` (process 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                     for k, v in record.items()}
            history.append_record(self.path, clean)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from),
        atomically; a torn last line is reported and dropped."""
        if self.enabled and self.path.is_file():
            records = history.read_records(self.path)
            history.rewrite_records(self.path, [r for r in records if r.get("step", 0) <= step])


def build_training(cfg: ml_collections.ConfigDict, devices=None, steps_per_call: int = 1):
    """(driver, init_fn) for a config of any family; `steps_per_call` > 1 fuses that many
    steps into one compiled call (batches stacked on a leading axis)."""
    return family_of(cfg).build_training(cfg, devices, steps_per_call)


def abstract_state(cfg: ml_collections.ConfigDict) -> Any:
    """Shapes and dtypes of a config's state, without computing it."""
    return family_of(cfg).abstract_state(cfg)


def _shapes(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), tuple(x.shape), str(x.dtype)) for p, x in flat]


def check_resumable(saved: dict[str, Any], cfg: ml_collections.ConfigDict, where: Path) -> None:
    """A clear error when the saved run's state has other shapes than this config's."""
    from genart_jax.config import from_dict

    saved_cfg = from_dict(saved)  # a run saved by an older version too
    if _shapes(abstract_state(saved_cfg)) == _shapes(abstract_state(cfg)):
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
    workdir = Path(workdir)
    main = jax.process_index() == 0
    t_start = time.perf_counter()
    print(describe_devices(), flush=True)  # every process: which devices it found

    def log(text: str) -> None:  # everything else from process 0 only
        if main:
            print(text, flush=True)

    family = family_of(cfg)
    periods = (cfg.train.log_every, cfg.train.sample_every, cfg.checkpoint.every_steps)
    k = resolve_steps_per_call(cfg.train.steps_per_call, periods=periods)
    driver, init_fn = family.build_training(cfg, devices, k)
    drivers = DriverPerSize(lambda n: family.build_training(cfg, devices, n)[0], driver, k)
    if not resume and main:
        moved = _move_aside(workdir)
        if moved:
            log(f"--no-resume: moved the previous run to {moved}")
    _barrier("genart_no_resume")  # every process sees the moved-aside workdir
    writer = MetricsWriter(workdir / "metrics.jsonl", enabled=main)
    latest = checkpoint.latest_step(workdir) if resume else None
    if latest is None:
        state, position = driver.init_state(init_fn, jax.random.PRNGKey(cfg.seed)), Position()
    else:
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
    start = latest or 0
    # The manager is made after the restore: it lists the steps once, and damaged ones left.
    ckpt = checkpoint.Checkpointer(workdir, cfg.checkpoint.keep, cfg.checkpoint.async_save)

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
    if resident_data:  # the split lives on the devices; batches are gathered there
        resident = driver.put_dataset(cached[0])

        def on_device(n: int, placed: Any) -> Any:
            return drivers(n).gather_placed(resident, placed)
    else:
        def on_device(n: int, placed: Any) -> Any:
            return placed
    if main:
        (workdir / "samples").mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(to_json(cfg))
    # TensorBoard (process 0): events past `start` (a killed run's) are dropped first, as in
    # metrics.jsonl; each run segment writes a new event file
    tb = TensorBoardWriter(workdir / LOG_DIR, start=start, enabled=main and cfg.train.tensorboard,
                           log=log)
    tb.config(start, to_json(cfg))
    steps = cfg.train.steps
    log(f"Training {cfg.model.arch} {cfg.model.family.upper()} on {cfg.data.name} "
        f"({num_examples} images, "
        f"{cfg.data.image_size}x{cfg.data.image_size}x{cfg.data.channels}) from step {start} "
        f"to {steps}, global batch {cfg.train.batch_size} over {driver.num_devices} "
        f"device(s), driver {driver.name}, {k} step(s) per call; writing to {workdir}")

    def save(step: int, host_state: Any) -> Path:
        if cfg.train.nonfinite == "stop" and int(host_state.nonfinite_count):
            _raise_diverged(host_state, {})
        meta = {"config": json.loads(to_json(cfg)), "data_position": position.to_dict()}
        return ckpt.save(step, host_state, meta)

    images_per_step = cfg.train.batch_size * family.batches_per_step(cfg)
    key_a, key_b = family.progress
    real = None  # a few training images, for reconstruction grids
    in_flight: collections.deque = collections.deque()  # metrics of the calls not waited for
    multi = jax.process_count() > 1
    sizes = call_sizes(start, steps, k, periods)
    calls = feed(prefetch(iterator, cfg.data.prefetch), sizes,
                 lambda n, batch: drivers(n).put_batch(batch),
                 check=lambda batch: check_label_range(batch["label"], cfg.model.num_classes))
    bar = tqdm(total=steps, initial=start, disable=not (progress and main), unit="step",
               dynamic_ncols=True)
    last: dict[str, float] = {}
    compile_s, t_saved = 0.0, time.monotonic()
    t_log, step_log = time.perf_counter(), start
    # Multi-process: a signal to any process is announced to all (JAX's preemption sync
    # manager), and all save at the same call end, checked at every call (a local flag).
    sync = multi and preemption_sync_available()
    try:
        with PreemptionGuard(on_signal=announce_preemption if sync else None) as guard:
            step = start
            for n_call, call in enumerate(calls, 1):  # calls end at logged, sampled, saved steps
                position = call.position
                if real is None:
                    first = call.first["image"][0][:16]
                    real = (to_model_range_np(cached[0][first] if resident_data
                                              else first), call.first["label"][0][:16])
                state, metrics = drivers(call.steps).step(
                    state, on_device(call.steps, call.batch))
                in_flight.append(metrics)
                if len(in_flight) > CALLS_AHEAD:
                    jax.block_until_ready(in_flight.popleft())  # see CALLS_AHEAD
                step += call.steps
                guard.step = step
                if step == start + call.steps:  # the first call compiles; not throughput
                    jax.block_until_ready(metrics)
                    compile_s = time.perf_counter() - t_log
                    t_log, step_log = time.perf_counter(), step
                logged = step % cfg.train.log_every == 0 or step == steps
                if logged:
                    last = drivers(call.steps).get_metrics(metrics)
                    now = time.perf_counter()
                    rate = (step - step_log) * images_per_step / max(now - t_log, 1e-9)
                    t_log, step_log = now, step
                    record = {"step": step, **last, "images_per_sec": rate,
                              "epoch": position.epoch}
                    writer.write(record)
                    tb.scalars(step, record)
                    bar.set_postfix({key_a: f"{last[key_a]:.3f}", key_b: f"{last[key_b]:.3f}",
                                     "img_s": f"{rate:.0f}"}, refresh=False)
                    if last["nonfinite_count"] and cfg.train.nonfinite == "stop":
                        _raise_diverged(driver.get_state(state), last)
                bar.update(call.steps)
                # Decisions that depend on time or signals are taken together by all
                # processes (signals: at the sync point of every call, or at logged steps
                # without the sync manager; timed saves: at logged steps), or the collective
                # save would hang.
                stop = guard.signum is not None
                timed = (cfg.checkpoint.every_minutes > 0 and time.monotonic() - t_saved
                         >= 60 * cfg.checkpoint.every_minutes)
                if multi:
                    agreed = sync and preemption_sync(n_call)
                    stop, timed = ((any_process(stop) or agreed, any_process(timed)) if logged
                                   else (agreed, False))
                every = cfg.checkpoint.every_steps
                do_save = stop or timed or bool(every and step % every == 0)
                do_sample = (main and cfg.train.sample_every > 0 and step < steps
                             and step % cfg.train.sample_every == 0)
                if not (do_save or do_sample):
                    continue
                jax.block_until_ready(state)
                t_aside = time.perf_counter()  # saves and grids are not training time
                host_state = driver.get_state(state)  # one host copy for save and grid
                if do_save:
                    path = save(step, host_state)
                    t_saved = time.monotonic()
                    if stop:
                        ckpt.close()
                        raise Preempted(guard.signum or signal.SIGTERM, step, path)
                if do_sample:
                    tb.images(step, family.write_samples(cfg, host_state, workdir / "samples" /
                                                         f"step_{step:06d}.png", real))
                t_log += time.perf_counter() - t_aside
    except BaseException:
        ckpt.close()  # a checkpoint already in flight still completes
        tb.close()
        raise
    finally:
        bar.close()
        calls.close()

    host_state = driver.get_state(state)
    final = int(host_state.step)
    ckpt.wait()
    path = checkpoint.checkpoint_dir(workdir) / str(final)
    if ckpt.latest_step() != final:
        save(final, host_state)
    ckpt.close()
    grids = (family.write_samples(cfg, host_state, workdir / "samples" / "final.png", real)
             if main else [])
    tb.images(final, grids)
    tb.close()
    grid = grids[0] if grids else None
    wall = time.perf_counter() - t_start
    summary = {"steps": int(host_state.step), "metrics": last, "compile_s": compile_s,
               "wall_s": wall, "checkpoint": str(path), "samples": str(grid)}
    shown = ", ".join(f"{k} {last[k]:.4f}" for k in family.progress if k in last)
    log(f"Done: step {summary['steps']} in {wall:.1f} s (first step incl. compile "
        f"{compile_s:.1f} s); final {shown}; samples {grid}; checkpoint {path}")
    return summary


def _barrier(name: str) -> None:
    """Wait for every process of a multi-process run (nothing to wait for alone)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _raise_diverged(state: Any, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    shown = f"; non-finite at the logged step: {', '.join(bad)}" if bad else ""
    raise TrainingDiverged(
        f"a loss or gradient became NaN/Inf at step {int(state.first_nonfinite_step)} (its "
        f"update was not applied){shown}. The latest checkpoint holds the last good state. "
        f"Lower the learning rates, use model.dtype=float32, or set train.nonfinite=skip to "
        f"drop such updates and go on. Metrics: {metrics}")


