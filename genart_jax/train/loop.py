"""The training loop: config -> data -> sharded batch -> step -> metrics / samples / checkpoint.

`train_and_evaluate(config, workdir)` is the library entry point (the CLI and notebooks call
it). It knows nothing of a model's insides: it builds the pieces from the config and drives them.
A workdir with checkpoints is resumed exactly: weights, optimizer and BatchNorm states, EMA,
step, RNG key and the data position all come back, so the run continues as if never stopped.
"""

from __future__ import annotations

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

from genart_jax import checkpoint, sampling
from genart_jax.config import flatten, to_json
from genart_jax.data import Position, make_input, prefetch
from genart_jax.models import build_gan
from genart_jax.parallel import (
    DATA,
    any_process,
    check_batch_divisible,
    describe_devices,
    make_driver,
)
from genart_jax.train.gan_step import make_gan_step
from genart_jax.train.optim import make_optimizer
from genart_jax.train.preemption import PreemptionGuard
from genart_jax.train.state import GANState, init_gan_state


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
            with open(self.path, "a") as f:
                f.write(json.dumps(clean) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from)."""
        if self.enabled and self.path.is_file():
            lines = self.path.read_text().splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
            self.path.write_text("".join(ln + "\n" for ln in kept))


def _gan_parts(cfg: ml_collections.ConfigDict, axis_name: str | None):
    generator, discriminator = build_gan(cfg.model, cfg.data, axis_name=axis_name)
    g_tx, d_tx = make_optimizer(cfg.g_optimizer), make_optimizer(cfg.d_optimizer)
    image_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)

    def init_fn(key: jax.Array) -> GANState:
        return init_gan_state(key, generator, discriminator, g_tx, d_tx,
                              latent_dim=cfg.model.latent_dim, image_shape=image_shape)

    return generator, discriminator, g_tx, d_tx, init_fn


def build_gan_training(cfg: ml_collections.ConfigDict, devices=None):
    """(driver, init_fn) for a GAN config: the models, optimizers and step wired together."""
    generator, discriminator, g_tx, d_tx, init_fn = _gan_parts(cfg, DATA)
    step = make_gan_step(
        generator, discriminator, g_tx, d_tx, latent_dim=cfg.model.latent_dim,
        global_batch=cfg.train.batch_size, g_loss=cfg.train.g_loss, d_steps=cfg.train.d_steps,
        g_steps=cfg.train.g_steps, ema_halflife_kimg=cfg.train.ema_halflife_kimg,
        ema_rampup=cfg.train.ema_rampup, axis_name=DATA)
    driver = make_driver(cfg.train.driver, step, devices)
    check_batch_divisible(cfg.train.batch_size, driver.num_devices, jax.process_count())
    return driver, init_fn


def abstract_state(cfg: ml_collections.ConfigDict) -> GANState:
    """Shapes and dtypes of a config's state, without computing it."""
    init_fn = _gan_parts(cfg, None)[-1]
    return jax.eval_shape(init_fn, jax.random.PRNGKey(0))


def sample_grid(cfg: ml_collections.ConfigDict, state: GANState, path: Path) -> Path:
    """Write the config's sample grid for a host-side state."""
    params, stats = sampling.generator_variables(cfg, state, cfg.sample.use_ema)
    images = sampling.generate(cfg, params, stats, num=cfg.sample.num, seed=cfg.sample.seed)
    return sampling.save_png(sampling.image_grid(images), path)


def _shapes(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), tuple(x.shape), str(x.dtype)) for p, x in flat]


def check_resumable(saved: dict[str, Any], cfg: ml_collections.ConfigDict, where: Path) -> None:
    """A clear error when the saved run's state has other shapes than this config's."""
    from genart_jax.config import validate

    saved_cfg = validate(ml_collections.ConfigDict(saved))
    if _shapes(abstract_state(saved_cfg)) == _shapes(abstract_state(cfg)):
        return
    old, new = flatten(saved_cfg), flatten(cfg)
    diff = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(new) if old.get(k) != new[k]]
    raise checkpoint.CheckpointError(
        f"the checkpoints in {where} belong to a run whose model state has other shapes than "
        f"this config's. Differing keys: {'; '.join(diff)}. Use the saved values, another "
        f"--workdir, or --no-resume to start over (the old run is moved aside, not deleted)")


def _move_aside(workdir: Path) -> Path | None:
    """Move a previous run's checkpoints, metrics and samples into workdir/replaced-TIME/."""
    olds = [workdir / n for n in (checkpoint.CHECKPOINT_DIR, "metrics.jsonl", "samples")]
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
    """Train the GAN of `cfg` up to `cfg.train.steps` iterations, writing into `workdir`:
    config.json, metrics.jsonl, samples/*.png and checkpoints/. Resumes from the latest
    checkpoint there unless `resume=False` (which moves the old run aside). Returns a summary.
    """
    workdir = Path(workdir)
    main = jax.process_index() == 0
    t_start = time.perf_counter()
    print(describe_devices(), flush=True)

    driver, init_fn = build_gan_training(cfg, devices)
    if not resume and main:
        moved = _move_aside(workdir)
        if moved:
            print(f"--no-resume: moved the previous run to {moved}", flush=True)
    ckpt = checkpoint.Checkpointer(workdir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
    writer = MetricsWriter(workdir / "metrics.jsonl", enabled=main)
    latest = ckpt.latest_step() if resume else None
    if latest is None:
        state, position = driver.init_state(init_fn, jax.random.PRNGKey(cfg.seed)), Position()
    else:
        meta = checkpoint.restore_meta(workdir, latest)
        check_resumable(meta["config"], cfg, checkpoint.checkpoint_dir(workdir))
        host, meta, latest = checkpoint.restore(workdir, abstract_state(cfg), latest)
        state, position = driver.put_state(host), Position(**meta["data_position"])
        writer.truncate_after(latest)
        print(f"Resuming from checkpoint {latest} (data epoch {position.epoch}, batch "
              f"{position.batch})", flush=True)
    start = latest or 0

    iterator, num_examples = make_input(
        cfg.data, global_batch=cfg.train.batch_size, seed=cfg.seed, group=cfg.train.d_steps,
        process_index=jax.process_index(), process_count=jax.process_count(),
        position=position)
    if main:
        (workdir / "samples").mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(to_json(cfg))
    steps = cfg.train.steps
    print(f"Training {cfg.model.arch} GAN on {cfg.data.name} ({num_examples} images, "
          f"{cfg.data.image_size}x{cfg.data.image_size}x{cfg.data.channels}) from step {start} "
          f"to {steps}, global batch {cfg.train.batch_size} over {driver.num_devices} "
          f"device(s), driver {driver.name}; writing to {workdir}", flush=True)

    def save(step: int) -> Path:
        host_state = driver.get_state(state)
        if cfg.train.nonfinite == "stop" and int(host_state.nonfinite_count):
            _raise_diverged(host_state, {})
        meta = {"config": json.loads(to_json(cfg)), "data_position": position.to_dict()}
        return ckpt.save(step, host_state, meta)

    images_per_step = cfg.train.batch_size * cfg.train.d_steps
    multi = jax.process_count() > 1
    batches = prefetch(iterator, cfg.data.prefetch)
    bar = tqdm(total=steps, initial=start, disable=not (progress and main), unit="step",
               dynamic_ncols=True)
    last: dict[str, float] = {}
    compile_s, t_saved = 0.0, time.monotonic()
    t_log, step_log = time.perf_counter(), start
    try:
        with PreemptionGuard() as guard:
            for step in range(start + 1, steps + 1):
                batch, position = next(batches)
                state, metrics = driver.step(state, driver.put_batch(batch))
                if step == start + 1:  # the first call compiles; keep it out of the throughput
                    jax.block_until_ready(metrics)
                    compile_s = time.perf_counter() - t_log
                    t_log, step_log = time.perf_counter(), step
                logged = step % cfg.train.log_every == 0 or step == steps
                if logged:
                    last = driver.get_metrics(metrics)
                    now = time.perf_counter()
                    rate = (step - step_log) * images_per_step / max(now - t_log, 1e-9)
                    t_log, step_log = now, step
                    writer.write({"step": step, **last, "images_per_sec": rate,
                                  "epoch": position.epoch})
                    bar.set_postfix(d_loss=f"{last['d_loss']:.3f}",
                                    g_loss=f"{last['g_loss']:.3f}", img_s=f"{rate:.0f}",
                                    refresh=False)
                    if last["nonfinite_count"] and cfg.train.nonfinite == "stop":
                        _raise_diverged(driver.get_state(state), last)
                bar.update(1)
                # Decisions that depend on time or signals are taken together by all
                # processes (at logged steps), or the collective save would hang.
                stop = guard.signum is not None
                timed = (cfg.checkpoint.every_minutes > 0 and time.monotonic() - t_saved
                         >= 60 * cfg.checkpoint.every_minutes)
                if multi:
                    stop, timed = (any_process(stop), any_process(timed)) if logged else (
                        False, False)
                if stop:
                    path = save(step)
                    ckpt.close()
                    raise Preempted(guard.signum or signal.SIGTERM, step, path)
                every = cfg.checkpoint.every_steps
                if (every and step % every == 0) or timed:
                    save(step)
                    t_saved = time.monotonic()
                if main and cfg.train.sample_every and step % cfg.train.sample_every == 0 \
                        and step < steps:
                    sample_grid(cfg, driver.get_state(state), workdir / "samples" /
                                f"step_{step:06d}.png")
    except BaseException:
        ckpt.close()  # a checkpoint already in flight still completes
        raise
    finally:
        bar.close()
        batches.close()

    host_state = driver.get_state(state)
    final = int(host_state.step)
    ckpt.wait()
    path = checkpoint.checkpoint_dir(workdir) / str(final)
    if ckpt.latest_step() != final:
        save(final)
    ckpt.close()
    grid = sample_grid(cfg, host_state, workdir / "samples" / "final.png") if main else None
    wall = time.perf_counter() - t_start
    summary = {"steps": int(host_state.step), "metrics": last, "compile_s": compile_s,
               "wall_s": wall, "checkpoint": str(path), "samples": str(grid)}
    print(f"Done: step {summary['steps']} in {wall:.1f} s (first step incl. compile "
          f"{compile_s:.1f} s); final d_loss {last.get('d_loss', float('nan')):.4f}, g_loss "
          f"{last.get('g_loss', float('nan')):.4f}; samples {grid}; checkpoint {path}",
          flush=True)
    return summary


def _raise_diverged(state: GANState, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    shown = f"; non-finite at the logged step: {', '.join(bad)}" if bad else ""
    raise TrainingDiverged(
        f"a loss or gradient became NaN/Inf at step {int(state.first_nonfinite_step)} (its "
        f"update was not applied){shown}. The latest checkpoint holds the last good state. "
        f"Lower the learning rates, use model.dtype=float32, or set train.nonfinite=skip to "
        f"drop such updates and go on. Metrics: {metrics}")


