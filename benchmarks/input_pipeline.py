"""Input pipeline throughput alone, beside the rate at which the train step consumes images.

    python benchmarks/input_pipeline.py [--config dcgan_digits] [--batches 200]

Rows: host pipeline with the split cached in memory (the default for small data), host
pipeline decoding and resizing every batch from the array_record files (data.cache=false),
the device-resident gather (data.on_device=true), and the train step itself.
"""

from __future__ import annotations

import argparse
import time

import jax

from genart_jax.config import apply_overrides, load_config
from genart_jax.data import make_input, prefetch
from genart_jax.data.pipeline import load_cached
from genart_jax.train.loop import build_training


def host_rate(cfg, batches: int) -> float:
    it, _ = make_input(cfg.data, global_batch=cfg.train.batch_size, seed=0)
    stream = prefetch(it, cfg.data.prefetch)
    next(stream)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(stream)
    stream.close()
    return batches * cfg.train.batch_size / (time.perf_counter() - t0)


def device_rates(cfg, batches: int) -> tuple[float, float]:
    """(images/s of the on-device gather alone, images/s of gather + train step)."""
    cfg = apply_overrides(cfg, {"data.on_device": "true", "data.cache": "true"})
    driver, init_fn = build_training(cfg)
    cached = load_cached(cfg.data)
    resident = driver.put_dataset(cached[0])
    it, _ = make_input(cfg.data, global_batch=cfg.train.batch_size, seed=0, cached=cached)
    host = [next(it)[0] for _ in range(batches)]
    jax.block_until_ready(driver.gather_batch(resident, host[0]))
    t0 = time.perf_counter()
    out = [driver.gather_batch(resident, b) for b in host]
    jax.block_until_ready(out)
    gather = batches * cfg.train.batch_size / (time.perf_counter() - t0)
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    state, m = driver.step(state, out[0])
    jax.block_until_ready(m)
    n = min(batches, 50)
    t0 = time.perf_counter()
    for b in out[:n]:
        state, m = driver.step(state, b)
    jax.block_until_ready(m)
    return gather, n * cfg.train.batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="dcgan_digits")
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args()
    cfg = load_config(args.config)
    print(f"{args.config}: {cfg.data.name} at {cfg.data.image_size}x{cfg.data.image_size}x"
          f"{cfg.data.channels}, batch {cfg.train.batch_size}, {jax.device_count()} "
          f"{jax.default_backend()} device(s)")
    cached = host_rate(apply_overrides(cfg, {"data.cache": "true"}), args.batches)
    decoded = host_rate(apply_overrides(cfg, {"data.cache": "false"}), args.batches // 4)
    gather, step = device_rates(cfg, args.batches)
    for name, rate in [("host pipeline, cached split", cached),
                       ("host pipeline, decode + resize per batch", decoded),
                       ("on-device gather", gather), ("train step (consumption)", step)]:
        print(f"  {name:42s} {rate:12,.0f} images/s")


if __name__ == "__main__":
    main()
