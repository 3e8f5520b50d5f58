"""Time the jitted R3GAN train step alone on this machine, A/B: XLA's grouped convolution
everywhere ("grouped", the form before) against the CPU block-diagonal dense form ("dense",
`genart_jax.models.r3gan.grouped_conv`), each with and without R1/R2; compile time, HLO size.

    python -m benchmarks.r3gan_step --config r3gan_digits --steps 3
"""

from __future__ import annotations

import argparse
import os
import time

from genart_jax import cpu_convolutions

cpu_convolutions.use_eigen_convolutions()  # as the CLI does, before JAX starts

import jax  # noqa: E402
import numpy as np  # noqa: E402

from genart_jax.config import apply_overrides, load_config  # noqa: E402
from genart_jax.models import r3gan  # noqa: E402
from genart_jax.train.loop import build_training  # noqa: E402


def xla_grouped(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None):
    """The form before: XLA's grouped convolution on every platform."""
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision)


def time_case(cfg, form: str, steps: int) -> dict:
    """Compile and run `steps` iterations of one case; seconds and HLO size."""
    r3gan.grouped_conv = FORMS[form]
    driver, init_fn = build_training(cfg, jax.devices()[:1])
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    s, c, b = cfg.data.image_size, cfg.data.channels, cfg.train.batch_size
    rng = np.random.default_rng(0)
    batch = driver.put_batch({"image": rng.integers(0, 256, (1, b, s, s, c), np.uint8),
                              "label": rng.integers(0, 10, (1, b)).astype(np.int32)})
    t = time.perf_counter()
    lowered = driver._step.lower(state, batch)
    t_lower = time.perf_counter() - t
    hlo = len(lowered.as_text())
    t = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    return {"lower_s": t_lower, "compile_s": t_compile, "hlo_chars": hlo,
            "step_s": times, "load": os.getloadavg()[0]}


FORMS = {"grouped": xla_grouped, "dense": r3gan.grouped_conv}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="r3gan_digits")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--cases", default="dense:on,grouped:on,dense:off,grouped:off")
    args = ap.parse_args()
    base = load_config(args.config)
    for case in args.cases.split(","):
        form, pen = case.split(":")
        cfg = base if pen == "on" else apply_overrides(
            base, {"train.r1_gamma": "0.0", "train.r2_gamma": "0.0"})
        r = time_case(cfg, form, args.steps)
        print(f"{form:8s} penalties={pen:3s} lower {r['lower_s']:.1f}s compile "
              f"{r['compile_s']:.1f}s hlo {r['hlo_chars']} chars steps "
              + " ".join(f"{t:.2f}" for t in r["step_s"]) + f" s  load {r['load']:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
