"""Whole train steps under each choice of convolution forms (`genart_jax.models.resample_conv`),
timed interleaved: the forms `resample_conv` picks, XLA's own forms everywhere
(`model.conv_forms=xla`), and the CPU forms everywhere (no size threshold: the stride-1 forms,
and in bfloat16 the matmul forms). It checks `CPU_FORMS_MIN_FLOPS` on a config.

    python -m benchmarks.conv_forms --config dcgan_digits [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from genart_jax import cpu_tuning
from genart_jax.bench.harness import Case, prepare_case
from genart_jax.bench.interleave import time_interleaved
from genart_jax.config import DTYPES, load_config
from genart_jax.models import resample_conv as rc


@contextlib.contextmanager
def _cpu_forms_everywhere() -> Iterator[None]:
    before = rc.CPU_FORMS_MIN_FLOPS, rc.CPU_MATMUL_FORMS_MIN_FLOPS
    rc.CPU_FORMS_MIN_FLOPS = rc.CPU_MATMUL_FORMS_MIN_FLOPS = 0
    try:
        yield
    finally:
        rc.CPU_FORMS_MIN_FLOPS, rc.CPU_MATMUL_FORMS_MIN_FLOPS = before


# name: (context the step is traced in, config overrides)
CHOICES = {"picked": (contextlib.nullcontext, {}),
           "xla": (contextlib.nullcontext, {"model.conv_forms": "xla"}),
           "cpu_forms": (_cpu_forms_everywhere, {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="bench_dcgan32")
    p.add_argument("--steps", type=int, default=30, help="timed steps per choice (at least)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    args = p.parse_args(argv)
    cpu_tuning.tune_for_cpu()  # as the CLI does, before JAX starts
    batch = load_config(args.config).train.batch_size
    timed = []
    for name, (forms, overrides) in CHOICES.items():
        with forms():  # the forms are fixed when the step is traced, in its first call
            t, _ = prepare_case(Case(args.config, 1, "shard_map", args.dtype, 1, batch),
                                args.warmup, overrides)
        t.name = name
        timed.append(t)
    time_interleaved(timed, args.steps, args.rounds)
    for t in timed:
        s = t.summary()
        rounds = ", ".join(f"{batch / x:.0f}" for x in s["round_step_s_medians"])
        print(f"{args.config} {args.dtype} {t.name}: {batch / s['step_s_median']:.0f} img/s "
              f"(rounds: {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
