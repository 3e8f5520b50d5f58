"""The training loop: config -> data -> sharded batch -> step -> metrics / samples / checkpoint.

`train_and_evaluate(config, workdir)` is the library entry point (the CLI and notebooks call
it). It knows nothing of a model's insides: it builds the pieces from the config and drives them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
from tqdm.auto import tqdm

from genart_jax import checkpoint, sampling
from genart_jax.config import to_json
from genart_jax.data import make_input, prefetch
from genart_jax.models import build_gan
from genart_jax.parallel import DATA, check_batch_divisible, describe_devices, make_driver
from genart_jax.train.gan_step import make_gan_step
from genart_jax.train.optim import make_optimizer
from genart_jax.train.state import GANState, init_gan_state


class TrainingDiverged(RuntimeError):
    """A loss or gradient norm became NaN or infinite."""


class MetricsWriter:
    """Appends one JSON object per logged step to `metrics.jsonl` (process 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def build_gan_training(cfg: ml_collections.ConfigDict, devices=None):
    """(driver, init_fn) for a GAN config: the models, optimizers and step wired together."""
    generator, discriminator = build_gan(cfg.model, cfg.data, axis_name=DATA)
    g_tx, d_tx = make_optimizer(cfg.g_optimizer), make_optimizer(cfg.d_optimizer)
    step = make_gan_step(
        generator, discriminator, g_tx, d_tx, latent_dim=cfg.model.latent_dim,
        global_batch=cfg.train.batch_size, g_loss=cfg.train.g_loss, d_steps=cfg.train.d_steps,
        g_steps=cfg.train.g_steps, ema_halflife_kimg=cfg.train.ema_halflife_kimg,
        ema_rampup=cfg.train.ema_rampup, axis_name=DATA)
    image_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)

    def init_fn(key: jax.Array) -> GANState:
        return init_gan_state(key, generator, discriminator, g_tx, d_tx,
                              latent_dim=cfg.model.latent_dim, image_shape=image_shape)

    driver = make_driver(cfg.train.driver, step, devices)
    check_batch_divisible(cfg.train.batch_size, driver.num_devices, jax.process_count())
    return driver, init_fn


def abstract_state(cfg: ml_collections.ConfigDict) -> GANState:
    """Shapes and dtypes of a config's state, without computing it."""
    generator, discriminator = build_gan(cfg.model, cfg.data)
    g_tx, d_tx = make_optimizer(cfg.g_optimizer), make_optimizer(cfg.d_optimizer)
    image_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
    return jax.eval_shape(lambda k: init_gan_state(
        k, generator, discriminator, g_tx, d_tx, latent_dim=cfg.model.latent_dim,
        image_shape=image_shape), jax.random.PRNGKey(0))


def sample_grid(cfg: ml_collections.ConfigDict, state: GANState, path: Path) -> Path:
    """Write the config's sample grid for a host-side state."""
    params = state.ema_g_params if cfg.sample.use_ema else state.g_params
    images = sampling.generate(cfg, params, state.g_batch_stats, num=cfg.sample.num,
                               seed=cfg.sample.seed, recalibrate=cfg.sample.use_ema)
    return sampling.save_png(sampling.image_grid(images), path)


def _nonfinite(metrics: dict[str, float]) -> list[str]:
    return [k for k, v in metrics.items() if not math.isfinite(v)]


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | Path, *,
                       progress: bool = True, devices=None) -> dict[str, Any]:
    """Train the GAN of `cfg` for `cfg.train.steps` iterations, writing into `workdir`:
    config.json, metrics.jsonl, samples/*.png and checkpoints/. Returns a summary."""
    workdir = Path(workdir)
    main = jax.process_index() == 0
    t_start = time.perf_counter()
    print(describe_devices(), flush=True)

    driver, init_fn = build_gan_training(cfg, devices)
    iterator, num_examples = make_input(
        cfg.data, global_batch=cfg.train.batch_size, seed=cfg.seed, group=cfg.train.d_steps,
        process_index=jax.process_index(), process_count=jax.process_count())
    state = driver.init_state(init_fn, jax.random.PRNGKey(cfg.seed))

    if main:
        (workdir / "samples").mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(to_json(cfg))
    writer = MetricsWriter(workdir / "metrics.jsonl", enabled=main)
    print(f"Training {cfg.model.arch} GAN on {cfg.data.name} ({num_examples} images, "
          f"{cfg.data.image_size}x{cfg.data.image_size}x{cfg.data.channels}) for "
          f"{cfg.train.steps} steps, global batch {cfg.train.batch_size} over "
          f"{driver.num_devices} device(s), driver {driver.name}; writing to {workdir}",
          flush=True)

    steps = cfg.train.steps
    images_per_step = cfg.train.batch_size * cfg.train.d_steps
    batches = prefetch(iterator, cfg.data.prefetch)
    bar = tqdm(total=steps, disable=not (progress and main), unit="step", dynamic_ncols=True)
    last: dict[str, float] = {}
    position = iterator.position
    compile_s = 0.0
    t_log, step_log = time.perf_counter(), 0
    try:
        for i in range(steps):
            batch, position = next(batches)
            state, metrics = driver.step(state, driver.put_batch(batch))
            step = i + 1
            if i == 0:  # the first call compiles; keep it out of the throughput
                jax.block_until_ready(metrics)
                compile_s = time.perf_counter() - t_log
                t_log, step_log = time.perf_counter(), 1
            if step % cfg.train.log_every == 0 or step == steps:
                last = driver.get_metrics(metrics)
                now = time.perf_counter()
                rate = (step - step_log) * images_per_step / max(now - t_log, 1e-9)
                t_log, step_log = now, step
                bad = _nonfinite(last)
                if bad:
                    raise TrainingDiverged(
                        f"non-finite {', '.join(bad)} at step {step}: {last}; lower the "
                        f"learning rates or use model.dtype=float32")
                record = {"step": step, **last, "images_per_sec": rate,
                          "epoch": position.epoch}
                writer.write(record)
                bar.set_postfix(d_loss=f"{last['d_loss']:.3f}", g_loss=f"{last['g_loss']:.3f}",
                                img_s=f"{rate:.0f}", refresh=False)
            if main and cfg.train.sample_every and step % cfg.train.sample_every == 0 \
                    and step < steps:
                sample_grid(cfg, driver.get_state(state), workdir / "samples" /
                            f"step_{step:06d}.png")
            bar.update(1)
    finally:
        bar.close()
        batches.close()

    host_state = driver.get_state(state)
    meta = {"config": json.loads(to_json(cfg)), "data_position": position.to_dict()}
    ckpt = checkpoint.save(workdir, int(host_state.step), host_state, meta)
    grid = sample_grid(cfg, host_state, workdir / "samples" / "final.png") if main else None
    wall = time.perf_counter() - t_start
    summary = {"steps": int(host_state.step), "metrics": last, "compile_s": compile_s,
               "wall_s": wall, "checkpoint": str(ckpt), "samples": str(grid)}
    print(f"Done: {summary['steps']} steps in {wall:.1f} s (first step incl. compile "
          f"{compile_s:.1f} s); final d_loss {last.get('d_loss', float('nan')):.4f}, g_loss "
          f"{last.get('g_loss', float('nan')):.4f}; samples {grid}; checkpoint {ckpt}",
          flush=True)
    return summary
