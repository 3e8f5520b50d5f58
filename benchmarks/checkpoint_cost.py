"""What a checkpoint save costs the training step: no saves vs. a save every K steps, written
asynchronously (default) or synchronously; and the size of one checkpoint.

    python benchmarks/checkpoint_cost.py [--config dcgan_digits] [--steps 200] [--every 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax

from genart_jax import checkpoint
from genart_jax.config import load_config
from genart_jax.data import make_input
from genart_jax.train.loop import build_gan_training


def run(cfg, steps: int, every: int, mode: str, workdir: Path) -> float:
    """Seconds per step (median over 5 blocks of steps/5), saving every `every` steps."""
    driver, init_fn = build_gan_training(cfg)
    it, _ = make_input(cfg.data, global_batch=cfg.train.batch_size, seed=0,
                       group=cfg.train.d_steps)
    batches = [driver.put_batch(next(it)[0]) for _ in range(8)]
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    state, m = driver.step(state, batches[0])
    jax.block_until_ready(m)  # compiled
    ckpt = checkpoint.Checkpointer(workdir, keep=2, async_save=(mode == "async"))
    block, times = steps // 5, []
    for b in range(5):
        t0 = time.perf_counter()
        for i in range(block):
            state, m = driver.step(state, batches[i % len(batches)])
            step = b * block + i + 1
            if mode != "none" and step % every == 0:
                ckpt.save(step, driver.get_state(state), {"note": "bench"})
        jax.block_until_ready(m)
        times.append((time.perf_counter() - t0) / block)
    ckpt.close()
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="dcgan_digits")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=10)
    args = p.parse_args()
    cfg = load_config(args.config)
    print(f"{args.config}: {jax.device_count()} {jax.default_backend()} device(s), batch "
          f"{cfg.train.batch_size}, save every {args.every} steps")
    base = None
    for mode in ("none", "async", "sync"):
        with tempfile.TemporaryDirectory() as d:
            s = run(cfg, args.steps, args.every, mode, Path(d))
            if mode != "none":
                size = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())
                ckpts = len(list((Path(d) / "checkpoints").glob("[0-9]*")))
                extra = f", checkpoint size {size / ckpts / 2**20:.2f} MiB"
            else:
                base, extra = s, ""
            print(f"  {mode:5s}: {1000 * s:7.2f} ms/step ({s / base:.2f}x){extra}")


if __name__ == "__main__":
    main()
